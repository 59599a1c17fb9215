"""RL fine-tuning from the video-pretrained prior (VPT §4.4): `rl_from_prior` starts from the
BC(IDM) policy, `rl_from_scratch` from a random one, both for the same environment steps.

VPT fine-tunes its BC policy with phasic policy gradient and a KL penalty towards the frozen
pretrained policy, so that what the reward does not reach is not forgotten. Here: PPO (Schulman
et al. 2017; PPG's auxiliary value phase left out) with GAE, a value head on the policy's
features (zero-initialised, so the prior's behaviour is where fine-tuning starts), and the penalty
KL(pi_theta || pi_prior) per step with coefficient `kl_coef` (RL from scratch has no prior: 0).
Rollouts are the first `steps` steps of episodes in fresh worlds (no auto-reset, as the
evaluation; a rollout cut while the episode goes on is bootstrapped from the value of its next
frame), so the sequence forward over a rollout gives the logits the policy acted with (its memory
starts empty at frame 0; Policy.step and Policy.__call__ agree to float rounding, tested), and
log-probabilities and values are recomputed that way. "Equal environment steps" is an equal
rollout budget (envs x steps per iteration), steps after an episode ended included. Reward: Craftax's (+1 per new achievement, +-0.1 per health
point)."""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxpapers.vpt import env as E
from jaxpapers.vpt.learners import initial_policy_carry, make_policy_act
from jaxpapers.vpt.models import Policy


@dataclasses.dataclass(frozen=True)
class PPOConfig:
  iterations: int = 20          # rollouts of `envs` episodes; env steps = iterations x envs x steps
  envs: int = 16
  steps: int = 250
  epochs: int = 2
  minibatch_envs: int = 4       # whole episodes per gradient step
  lr: float = 1e-4
  gamma: float = 0.99
  lam: float = 0.95
  clip: float = 0.2
  vf_coef: float = 0.5
  ent_coef: float = 0.01
  kl_coef: float = 0.2
  max_grad_norm: float = 0.5


class ActorCritic(nnx.Module):
  """A Policy and a value head on its features: frames [B, T, ...] -> (logits, values [B, T])."""

  def __init__(self, policy: Policy, *, rngs: nnx.Rngs):
    self.policy = policy
    self.value = nnx.Linear(policy.c.d_model, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def __call__(self, frames):
    h = self.policy.features(frames)
    return self.policy.head(h), self.value(h)[..., 0]


def gae(rewards, values, alive, gamma: float, lam: float, alive_after):
  """Generalised advantage estimates and returns [N, T] of episodes with rewards / alive [N, T]
  and values [N, T + 1] (the last: of the frame after the last step); alive_after [N]: the
  episode had not ended after the last step. A step continues into the next while the episode is
  alive there; the last step bootstraps from the last value if the episode goes on (a rollout
  cut, not an ending). Steps after the end get 0."""
  alive = alive.astype(jnp.float32)
  cont = jnp.concatenate([alive[:, 1:], jnp.asarray(alive_after, jnp.float32)[:, None]], axis=1)
  deltas = rewards + gamma * values[:, 1:] * cont - values[:, :-1]

  def back(next_adv, x):
    d, c = x
    a = d + gamma * lam * c * next_adv
    return a, a

  _, adv = jax.lax.scan(back, jnp.zeros(rewards.shape[0]), (deltas.T, cont.T), reverse=True)
  adv = adv.T * alive
  return adv, (adv + values[:, :-1]) * alive


def ppo_loss(model: ActorCritic, batch: dict, cfg: PPOConfig, kl_coef=None):
  """PPO's clipped surrogate + value loss - entropy bonus + kl_coef KL(pi || prior), averaged over
  the alive steps of a minibatch of whole episodes; (loss, metrics)."""
  logits, values = model(batch["frames"])
  logp_all = jax.nn.log_softmax(logits[:, :-1])
  logp = jnp.take_along_axis(logp_all, batch["actions"][..., None], -1)[..., 0]
  m = batch["alive"].astype(jnp.float32)
  n = jnp.maximum(m.sum(), 1.0)
  mean = lambda x: (x * m).sum() / n
  adv = batch["adv"]
  adv = (adv - mean(adv)) / (jnp.sqrt(mean((adv - mean(adv)) ** 2)) + 1e-8)
  ratio = jnp.exp(logp - batch["logp"])
  pg = -mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv))
  vf = mean((values[:, :-1] - batch["returns"]) ** 2)
  p = jnp.exp(logp_all)
  entropy = mean(-(p * logp_all).sum(-1))
  kl = mean((p * (logp_all - batch["prior_logp"])).sum(-1))
  kl_coef = cfg.kl_coef if kl_coef is None else kl_coef
  loss = pg + cfg.vf_coef * vf - cfg.ent_coef * entropy + kl_coef * kl
  return loss, {"policy": pg, "value": vf, "entropy": entropy, "kl_to_prior": kl}


def finetune(env: E.Env, model: ActorCritic, prior: Policy | None, cfg: PPOConfig, key,
             log=None, play=None) -> dict:
  """PPO on `model` in place for cfg.iterations rollouts; `prior` (frozen) is the KL target
  (None: no penalty). play(policy, key) -> the record of a rollout in cfg.envs worlds for
  cfg.steps + 1 steps (None: env.make_rollout's). Returns the learning curve: per rollout the
  environment steps so far, the episodes' achievements (`score`, as evaluation counts them),
  return and the losses."""
  tx = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr))
  graphdef, params = nnx.split(model)
  opt_state = tx.init(params)
  # one step more than trained on: whether each episode is still alive after step steps - 1
  # (a cut, bootstrapped) or ended there (not bootstrapped)
  if play is None:
    rollout = E.make_rollout(env, make_policy_act(model.policy), cfg.envs, cfg.steps + 1)
    play = lambda policy, k: rollout(k, initial_policy_carry(policy, cfg.envs))[0]
  forward = jax.jit(lambda p, frames: nnx.merge(graphdef, p)(frames))
  use_prior = prior is not None and cfg.kl_coef > 0
  if use_prior:
    prior_def, prior_params = nnx.split(prior)
    prior_logp = jax.jit(lambda frames: jax.nn.log_softmax(nnx.merge(prior_def, prior_params)(frames)[:, :-1]))

  # kl_coef is an argument, not a constant: RL from the prior and from scratch compile one update
  # (XLA's persistent cache serves the second)
  kl_coef = jnp.float32(cfg.kl_coef if use_prior else 0.0)

  @jax.jit
  def update(params, opt_state, batch, kl_coef):
    grad_fn = jax.value_and_grad(lambda p: ppo_loss(nnx.merge(graphdef, p), batch, cfg, kl_coef),
                                 has_aux=True)
    (_, metrics), grads = grad_fn(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics

  curve, t0 = [], time.perf_counter()
  for it in range(cfg.iterations):
    key, k_roll, k_perm = jax.random.split(key, 3)
    nnx.update(model, params)
    rec = play(model.policy, k_roll)
    t = cfg.steps
    frames = jnp.swapaxes(rec["frames"][:t + 1], 0, 1)              # [N, T + 1, H, W, 3]
    actions, alive, rewards = rec["actions"][:t].T, rec["alive"][:t].T, rec["rewards"][:t].T
    logits, values = forward(params, frames)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), actions[..., None], -1)[..., 0]
    adv, returns = gae(rewards, values, alive, cfg.gamma, cfg.lam, alive_after=rec["alive"][t])
    p_logp = prior_logp(frames) if use_prior else jnp.zeros(logits[:, :-1].shape)
    data = {"frames": frames, "actions": actions, "alive": alive, "logp": logp, "adv": adv,
            "returns": returns, "prior_logp": p_logp}
    metrics = []
    for epoch in range(cfg.epochs):
      perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_perm, epoch), cfg.envs))
      for lo in range(0, cfg.envs - cfg.minibatch_envs + 1, cfg.minibatch_envs):
        idx = perm[lo:lo + cfg.minibatch_envs]
        params, opt_state, m = update(params, opt_state, jax.tree.map(lambda x: x[idx], data), kl_coef)
        metrics.append(m)
    unlocked = np.asarray(rec["achievements"][-1])
    row = {"iteration": it + 1, "env_steps": (it + 1) * cfg.envs * cfg.steps,
           "score": float(unlocked.sum(-1).mean()), "return": float(np.asarray(rewards).sum(-1).mean()),
           **{k: float(np.mean([float(m[k]) for m in metrics])) for k in metrics[0]
              if use_prior or k != "kl_to_prior"},                  # no prior: no KL to report
           "seconds": time.perf_counter() - t0}
    if it == 0:                        # at the start: the fine-tuned policy is the prior (KL 0)
      row["kl_to_prior_first_update"] = float(metrics[0]["kl_to_prior"]) if use_prior else None
    curve.append(row)
    if log:
      log(row)
  nnx.update(model, params)
  return {"curve": curve}
