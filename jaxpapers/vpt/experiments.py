"""`jaxpapers run vpt/pipeline`: VPT's whole pipeline in Craftax-Classic (arXiv 2206.11795):
scripted demonstrations -> a small labelled ("contractor") split -> IDM -> pseudo-labels of the
unlabelled video -> BC policies on IDM labels / the small labelled set / true labels -> evaluation
in the environment against a random policy."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from jaxpapers.core.checkpoint import load_params_npz, save_params_npz
from jaxpapers.core.errors import ConfigError
from jaxpapers.core.mesh import make_mesh
from jaxpapers.core.report import public
from jaxpapers.core.stats import mean_std
from jaxpapers.core.workdir import cached_result, persistent_compilation_cache
from jaxpapers.vpt import env as E
from jaxpapers.vpt import identifiability
from jaxpapers.vpt.data import Episodes, split
from jaxpapers.vpt.demonstrator import STYLES, DemoConfig, initial_carry, make_demonstrator
from jaxpapers.vpt.learners import fit, idm_accuracy, initial_policy_carry, make_policy_act, pseudo_label
from jaxpapers.vpt.models import NetConfig, Policy
from jaxpapers.vpt.report import save_gif, write
from jaxpapers.vpt.rl import ActorCritic, PPOConfig, finetune

log = logging.getLogger("jaxpapers")
POLICIES = ("bc_idm", "bc_small", "bc_true", "random")   # the three BC policies, then the baseline


def validate(c: ml_collections.ConfigDict) -> None:
  if c.env not in E.ENVIRONMENTS:
    raise ConfigError(f"--config.env: unknown environment {c.env!r}; known: {', '.join(E.ENVIRONMENTS)}")
  styles = tuple(c.demonstrator.styles)
  if len(styles) != len(STYLES) or min(styles) < 0 or abs(sum(styles) - 1.0) > 1e-6:
    raise ConfigError(f"--config.demonstrator.styles: probabilities of {', '.join(STYLES)} (3 numbers "
                      f">= 0 summing to 1), got {styles}")
  if not 0.0 < c.data.labelled_fraction < 1.0:
    raise ConfigError(f"--config.data.labelled_fraction must be in (0, 1), got {c.data.labelled_fraction}")
  for f in c.idm.scaling:
    if not 0.0 < f < 1.0:
      raise ConfigError(f"--config.idm.scaling: fractions of the labelled set in (0, 1), got {f}")
  if c.data.steps + 1 < max(c.idm.net.window, c.policy.net.window):
    raise ConfigError(f"--config.data.steps={c.data.steps}: episodes shorter than the model windows")
  if isinstance(c.idm.motion_ablation, bool) or not isinstance(c.idm.motion_ablation, int) or \
      c.idm.motion_ablation < 0:
    raise ConfigError(f"--config.idm.motion_ablation is the number of replications that also train "
                      f"the tile_motion IDM (>= 0), got {c.idm.motion_ablation!r}")
  r = c.rl
  unknown = set(r) - {f.name for f in dataclasses.fields(PPOConfig)} - {"replications"}
  if unknown:
    raise ConfigError(f"--config.rl: unknown setting(s) {', '.join(sorted(unknown))}")
  if (r.replications < 0 or r.iterations < 0 or r.steps < 1 or r.epochs < 1 or r.minibatch_envs < 1
      or r.envs % r.minibatch_envs):
    raise ConfigError(f"--config.rl: replications and iterations must be >= 0, steps and epochs >= 1, "
                      f"envs a multiple of minibatch_envs >= 1, got {r.replications}, {r.iterations}, "
                      f"{r.steps}, {r.epochs}, envs {r.envs}, minibatch_envs {r.minibatch_envs}")
  if not isinstance(c.seeds, int) or c.seeds < 1:
    raise ConfigError(f"--config.seeds is the number of replications (>= 1), got {c.seeds!r}")
  if c.eval.episodes < 1 or c.eval.steps < 1:
    raise ConfigError(f"--config.eval.episodes and steps must be >= 1, got {c.eval.episodes}, {c.eval.steps}")
  if c.data.test_episodes < 1:
    raise ConfigError(f"--config.data.test_episodes must be >= 1 (the IDM's held-out episodes), got "
                      f"{c.data.test_episodes}")
  t = c.policy.train
  if not 1 <= t.eval_every <= t.steps:
    raise ConfigError(f"--config.policy.train.eval_every must be in [1, steps={t.steps}] (the BC "
                      f"length is chosen on validation worlds at these steps), got {t.eval_every}")
  p = c.policy.net
  if p.memory < 1 or p.layers * (p.memory - 1) >= p.window:
    raise ConfigError(f"--config.policy.net.memory={p.memory}: each policy frame sees the last memory "
                      f"(>= 1) frames, and training windows of window={p.window} frames must be longer "
                      f"than the burn-in layers x (memory - 1) = {p.layers * (p.memory - 1)}")
  for name in ("idm", "policy"):
    n = c[name].net
    if n.window < 2:
      raise ConfigError(f"--config.{name}.net.window must be >= 2, got {n.window}")
    if n.d_model % n.heads:
      raise ConfigError(f"--config.{name}.net.d_model={n.d_model} is not divisible by heads={n.heads}")


def net_config(n: ml_collections.ConfigDict, env: E.Env, **override) -> NetConfig:
  return NetConfig(frame_shape=env.frame_shape, num_actions=env.num_actions, window=n.window,
                   stem_channels=n.stem_channels, channels=tuple(n.channels),
                   blocks_per_stage=n.blocks_per_stage, d_model=n.d_model, heads=n.heads,
                   layers=n.layers, temporal_kernel=n.get("temporal_kernel", 5),
                   tile_features=n.get("tile_features", 16), pooled=n.get("pooled", False),
                   motion=override.get("motion", n.get("motion", False)), memory=n.get("memory", 8))


def demonstrations(c, env: E.Env, episodes: int, key) -> tuple[Episodes, E.Rollout, dict]:
  cfg = DemoConfig(**c.demonstrator)
  k_styles, k_worlds = jax.random.split(key)
  carry = initial_carry(cfg, episodes, k_styles)
  r = E.collect(env, make_demonstrator(cfg), episodes, c.data.steps, k_worlds, carry0=carry)
  return Episodes.from_rollout(r), r, behaviour(r, carry["style"])


def behaviour(r: E.Rollout, styles) -> dict:
  """The demonstrators' action distribution (share of the steps they played) and how many
  episodes each style played."""
  a = r.actions[r.alive]
  return {"actions": {n: float((a == i).mean()) for i, n in enumerate(E.ACTION_NAMES)},
          "styles": {n: int((np.asarray(styles) == i).sum()) for i, n in enumerate(STYLES)}}


def success(r: E.Rollout) -> dict:
  """Per-achievement success rate (share of episodes that unlocked it before ending), mean
  return, and `score` = mean number of achievements unlocked per episode."""
  u = r.unlocked
  return {"per_achievement": {n: float(s) for n, s in zip(E.ACHIEVEMENT_NAMES, u.mean(0))},
          "score": float(u.sum(1).mean()), "return": float(r.returns.mean()),
          "episode_length": float(r.alive.sum(0).mean())}


class Evaluator:
  """Runs policies in `episodes` fresh worlds for `steps` steps: one compiled rollout for every
  BC policy (parameters are part of the carry) and for the random policy (`policy` None: the
  template's rollout acting uniformly at random). Every call runs under `mesh` (the context BC
  training evaluates in): a rollout traced inside and outside `jax.set_mesh` is two programs
  (three 10 s compiles per policy at the tiny preset). `play` runs other world counts and
  lengths (RL's rollouts; the same program where they match)."""

  def __init__(self, env: E.Env, template_policy, episodes: int, steps: int, mesh):
    self.env, self.n, self.steps, self.mesh = env, episodes, steps, mesh
    self.template = template_policy
    self.rollouts = {}

  def play(self, policy, key, num_envs: int, steps: int) -> dict:
    """The rollout's record (numpy arrays) of `policy` (None: uniformly random actions)."""
    if (num_envs, steps) not in self.rollouts:
      self.rollouts[num_envs, steps] = E.make_rollout(self.env, make_policy_act(self.template), num_envs, steps)
    with jax.set_mesh(self.mesh):
      # replicated on the mesh, as in training: a policy's parameters placed otherwise after
      # training (an unsharded copy) would compile the rollout again
      carry = initial_policy_carry(policy or self.template, num_envs, uniform=policy is None)
      carry = jax.device_put(carry, NamedSharding(self.mesh, PartitionSpec()))
      rec, _ = self.rollouts[num_envs, steps](key, carry)
    return jax.device_get(rec)

  def __call__(self, policy, key) -> E.Rollout:
    return E.Rollout(**self.play(policy, key, self.n, self.steps))


def _train_cfg(t: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(t.to_dict())


WORLDS = 1_000_003   # folded into a replication's seed first: the learners' nnx.Rngs(seed) draw
                     # fold_in(key(seed), 0, 1, ...), which the worlds must not share


def world_keys(seed: int) -> dict[str, jax.Array]:
  """A replication's randomness outside the learners: its demonstrations' worlds, the validation
  worlds that choose each policy's BC length, the test worlds of the reported numbers and the
  worlds of the identifiability ceiling and RL's rollout worlds (disjoint streams of one seed)."""
  k = jax.random.fold_in(jax.random.key(seed), WORLDS)
  return {name: jax.random.fold_in(k, i)
          for i, name in enumerate(("demonstrations", "validation", "test", "identifiability", "rl"))}


def train_idms(c, env, labelled: Episodes, held_out: Episodes, wd: Path, mesh, seed: int,
               index: int) -> dict:
  """The IDM of replication `index` (learned from pixels), its held-out accuracy, the tile_motion
  ablation (the same IDM with the hand-made motion features) in the first
  `c.idm.motion_ablation` replications and, in the first replication only, the data-scaling
  curve."""
  idm = fit("idm", net_config(c.idm.net, env, motion=False), _train_cfg(c.idm.train), labelled,
            wd / "idm", mesh, seed)
  out = {"model": idm, "eval": idm_accuracy(pseudo_label(idm.model, held_out.frames), held_out)}
  if index < c.idm.motion_ablation:
    m = fit("idm", net_config(c.idm.net, env, motion=True), _train_cfg(c.idm.train), labelled,
            wd / "idm_tile_motion", mesh, seed)
    out["tile_motion"] = idm_accuracy(pseudo_label(m.model, held_out.frames), held_out)
  if index == 0:
    scaling = []
    for f in sorted(c.idm.scaling):
      k = max(1, int(round(f * len(labelled))))
      sub = labelled.take(np.arange(k))
      m = fit("idm", net_config(c.idm.net, env, motion=False), _train_cfg(c.idm.train), sub,
              wd / f"idm_scaling_{k}", mesh, seed)
      acc = idm_accuracy(pseudo_label(m.model, held_out.frames), held_out)
      scaling.append({"episodes": k, "steps": sub.steps, "accuracy_non_noop": acc["accuracy_non_noop"],
                      "accuracy": acc["accuracy"]})
    scaling.append({"episodes": len(labelled), "steps": labelled.steps,
                    "accuracy_non_noop": out["eval"]["accuracy_non_noop"], "accuracy": out["eval"]["accuracy"]})
    out["scaling"] = scaling
  return out


def fingerprint(c) -> dict:
  """What a cached BC sub-run depends on: the config without the number of replications (more
  replications reuse the ones done), and the version of this pipeline's protocol."""
  return dict({k: v for k, v in c.to_dict().items() if k != "seeds"}, protocol=PROTOCOL)


PROTOCOL = "vpt-4"   # replications, validation-chosen BC length, the policy's memory, RL (issue 23)


def select_and_test(c, name: str, data: Episodes, pol_net: NetConfig, evaluator: Evaluator,
                    keys: dict, wd: Path, mesh, seed: int, gifs: bool) -> dict:
  """One BC policy of one replication, its length chosen without peeking (VPT's claims are
  judged on the test worlds only): every `policy.train.eval_every` steps and at the end the
  policy plays the validation worlds; the parameters of the earliest best point are kept and
  play the test worlds once, after training. With `gifs`, those test episodes are saved as GIFs.
  A sub-run (its result.json is reused by a rerun; BC keeps no checkpoints, so a killed one
  starts again)."""

  def fresh():
    curve, best = [], {"validation": -1.0}

    def evaluate(model, step):
      val = success(evaluator(model, keys["validation"]))
      curve.append({"step": step, "validation_score": val["score"]})
      if val["score"] > best["validation"]:
        best.update(validation=val["score"], step=step,
                    params=jax.tree.map(np.asarray, nnx.state(model)))
      return {"validation_score": val["score"]}

    pol = fit("policy", pol_net, _train_cfg(c.policy.train), data, wd / name, mesh, seed,
              drop_null=c.policy.drop_null, eval_fn=evaluate)
    evaluate(pol.model, c.policy.train.steps)
    chosen = pol.model
    nnx.update(chosen, best["params"])
    save_params_npz(wd / name / "chosen.npz", chosen)       # the prior of RL fine-tuning (bc_idm)
    r = evaluator(chosen, keys["test"])
    if gifs:
      for i in range(min(c.eval.gif_episodes, r.frames.shape[1])):
        save_gif(wd.parent / f"episode_{name}_{i}.gif", r.frames[:, i], r.alive[:, i])
    return {"selected_step": best["step"], "validation_score": best["validation"],
            "test": success(r), "curve": curve,
            "training": {"seconds": pol.seconds, "final_loss": pol.final_loss,
                         "step_time": pol.step_time}}, None

  return cached_result(wd / name / "result.json", fresh, fingerprint(c))[0]


def rl_run(c, name: str, env, pol_net: NetConfig, evaluator: Evaluator, keys: dict, wd: Path,
           seed: int) -> dict:
  """`rl_from_prior` (PPO from this replication's BC(IDM) policy with a KL penalty towards it,
  VPT §4.4) or `rl_from_scratch` (the same PPO from a random policy, no penalty) for c.rl's
  environment steps in the replication's RL worlds, then the test worlds. A sub-run as BC's."""

  def fresh():
    cfg = PPOConfig(**{k: v for k, v in c.rl.items() if k != "replications"})
    policy, prior = Policy(pol_net, rngs=nnx.Rngs(params=seed)), None
    if name == "rl_from_prior":
      prior = Policy(pol_net, rngs=nnx.Rngs(params=seed))
      for m in (policy, prior):
        load_params_npz(wd / "bc_idm" / "chosen.npz", m)
    else:
      cfg = dataclasses.replace(cfg, kl_coef=0.0)
    model = ActorCritic(policy, rngs=nnx.Rngs(params=seed + 1))
    log_row = lambda r: log.info("seed %d %s: %d env steps, training episodes score %.2f", seed,
                                 name, r["env_steps"], r["score"])
    out = finetune(env, model, prior, cfg, keys["rl"], log=log_row,
                   play=lambda pol, k: evaluator.play(pol, k, cfg.envs, cfg.steps + 1))
    return {"curve": out["curve"], "env_steps": cfg.iterations * cfg.envs * cfg.steps,
            "test": success(evaluator(model.policy, keys["test"]))}, None

  return cached_result(wd / name / "result.json", fresh, fingerprint(c))[0]


def replication(c, env, seed: int, wd: Path, mesh, evaluator: Evaluator, index: int) -> dict:
  """Replication `index`: everything random drawn from `seed`: demonstrations, the labelled
  split, the IDM, every BC policy's initialisation and batches, validation and test worlds."""
  first = index == 0
  keys = world_keys(seed)
  t0 = time.perf_counter()
  everything, demo_rollout, demo_behaviour = demonstrations(
      c, env, c.data.episodes + c.data.test_episodes, keys["demonstrations"])
  n = c.data.episodes
  episodes, held_out = everything.take(np.arange(n)), everything.take(np.arange(n, len(everything)))
  labelled, unlabelled = split(episodes, c.data.labelled_fraction, seed)
  timing = {"demonstrations": time.perf_counter() - t0}
  log.info("seed %d: %d demonstration episodes x %d steps (%d labelled, %d unlabelled, %d held out)",
           seed, len(episodes), c.data.steps, len(labelled), len(unlabelled), len(held_out))

  t0 = time.perf_counter()
  idms = train_idms(c, env, labelled, held_out, wd, mesh, seed, index)
  timing["idm"] = time.perf_counter() - t0
  log.info("seed %d IDM: held-out accuracy %.3f (non-noop %.3f)%s", seed, idms["eval"]["accuracy"],
           idms["eval"]["accuracy_non_noop"],
           f"; with tile_motion {idms['tile_motion']['accuracy_non_noop']:.3f}" if "tile_motion" in idms else "")

  ceiling, t0 = None, time.perf_counter()
  if first and c.idm.identifiability:   # what two frames tell of the demonstrator's actions
    ceiling = identifiability.measure(env, DemoConfig(**c.demonstrator), c.data.test_episodes,
                                      c.data.steps, keys["identifiability"])
    log.info("identifiability ceiling: %.3f of non-noop actions unique from two frames",
             ceiling["unique_non_noop"])
  timing["identifiability"] = time.perf_counter() - t0

  t0 = time.perf_counter()
  pseudo = pseudo_label(idms["model"].model, unlabelled.frames)
  pseudo_eval = idm_accuracy(pseudo, unlabelled)
  timing["pseudo_label"] = time.perf_counter() - t0
  datasets = {"bc_idm": Episodes.concat([labelled, unlabelled.relabel(pseudo)]),
              "bc_small": labelled,
              "bc_true": Episodes.concat([labelled, unlabelled])}
  # what bc_idm was trained on: the unlabelled part's labels against the hidden actions (equal to
  # the pseudo-labels' agreement unless something else reached that dataset)
  trained = datasets["bc_idm"].take(np.arange(len(labelled), len(datasets["bc_idm"])))
  v = trained.valid
  bc_idm_labels = {"steps": int(v.sum()),
                   "agreement_with_hidden": float((trained.actions == unlabelled.actions)[v].mean())}

  t0 = time.perf_counter()
  pol_net = net_config(c.policy.net, env)
  policies = {}
  for name, data in datasets.items():
    policies[name] = select_and_test(c, name, data, pol_net, evaluator, keys, wd, mesh, seed, first)
    log.info("seed %d %s: step %d chosen on validation worlds (score %.2f); test score %.2f", seed,
             name, policies[name]["selected_step"], policies[name]["validation_score"],
             policies[name]["test"]["score"])
  if index < c.rl.replications and c.rl.iterations > 0:
    for name in ("rl_from_prior", "rl_from_scratch"):
      policies[name] = rl_run(c, name, env, pol_net, evaluator, keys, wd, seed)
      log.info("seed %d %s: test score %.2f after %d env steps", seed, name,
               policies[name]["test"]["score"], policies[name]["env_steps"])
  r = evaluator(None, keys["test"])
  policies["random"] = {"test": success(r)}
  if first:
    for i in range(min(c.eval.gif_episodes, r.frames.shape[1])):
      save_gif(wd.parent / f"episode_random_{i}.gif", r.frames[:, i], r.alive[:, i])
  timing["bc_and_eval"] = time.perf_counter() - t0
  return {"seed": seed, "idm": idms["eval"], "idm_tile_motion": idms.get("tile_motion"),
          "identifiability": ceiling,
          "idm_scaling": idms.get("scaling"), "pseudo_labels": pseudo_eval,
          "bc_idm_labels": bc_idm_labels, "policies": policies,
          "demonstrator": success(demo_rollout) | demo_behaviour,
          "data": {"episodes": len(episodes), "labelled_episodes": len(labelled),
                   "labelled_steps": labelled.steps, "unlabelled_steps": unlabelled.steps,
                   "held_out_steps": held_out.steps},
          "training": {"idm": {"seconds": idms["model"].seconds, "final_loss": idms["model"].final_loss}},
          "timing_seconds": timing}


PAIRS = (("bc_idm", "bc_small"), ("bc_idm", "bc_true"), ("bc_idm", "random"), ("bc_small", "random"),
         ("bc_true", "random"))


def with_se(d: dict) -> dict:
  """A `mean_std` summary with the standard error of its mean (None for one value)."""
  return dict(d, se=d["std"] / np.sqrt(d["n"]) if d["std"] is not None else None)


def summarise(reps: list[dict]) -> dict:
  """Mean, sample std and 95% t-interval over replications of every reported figure, and the
  paired differences of test scores (each replication's policies share its worlds)."""
  score = {p: [r["policies"][p]["test"]["score"] for r in reps] for p in POLICIES}
  success_ = {p: {"score": mean_std(score[p]),
                  "return": mean_std([r["policies"][p]["test"]["return"] for r in reps]),
                  "per_achievement": {a: float(np.mean([r["policies"][p]["test"]["per_achievement"][a]
                                                        for r in reps])) for a in E.ACHIEVEMENT_NAMES}}
              for p in POLICIES}
  paired = {}
  for a, b in PAIRS:
    paired[f"{a} - {b}"] = with_se(mean_std(np.subtract(score[a], score[b])))
  ratio = [x / max(y, 1e-9) for x, y in zip(score["bc_idm"], score["bc_true"])]
  # the "IDM labels suffice" claim (>= 80% of BC on true labels), judged per replication as the
  # paired difference bc_idm - 0.8 bc_true
  suffice = with_se(mean_std(np.subtract(score["bc_idm"], 0.8 * np.asarray(score["bc_true"]))))
  motion = [r["idm_tile_motion"]["accuracy_non_noop"] for r in reps if r["idm_tile_motion"]]
  return {
      "idm_accuracy": float(np.mean([r["idm"]["accuracy_non_noop"] for r in reps])),
      "idm_accuracy_all": float(np.mean([r["idm"]["accuracy"] for r in reps])),
      "idm_accuracy_tile_motion": float(np.mean(motion)) if motion else None,
      "idm_accuracy_over_seeds": mean_std([r["idm"]["accuracy_non_noop"] for r in reps]),
      "pseudo_label_agreement": mean_std([r["pseudo_labels"]["accuracy"] for r in reps]),
      "success": success_, "paired": paired,
      "score": {p: success_[p]["score"]["mean"] for p in POLICIES},
      "score_std": {p: success_[p]["score"]["std"] for p in POLICIES},
      "bc_idm_over_bc_true": float(np.mean(score["bc_idm"]) / max(np.mean(score["bc_true"]), 1e-9)),
      "bc_idm_over_bc_true_per_seed": ratio,
      "bc_idm_minus_0.8_bc_true": suffice,
      "identifiability_ceiling": (reps[0]["identifiability"] or {}).get("unique_non_noop"),
      "selected_steps": {p: [r["policies"][p]["selected_step"] for r in reps] for p in POLICIES[:3]},
      **rl_summary(reps),
  }


def rl_summary(reps: list[dict]) -> dict:
  """`rl_from_prior` / `rl_from_scratch`: mean test score (achievements per episode) at equal
  environment steps over the replications that ran RL, with the paired difference and both
  learning curves (mean over those replications); None where no replication ran RL."""
  ran = [r for r in reps if "rl_from_prior" in r["policies"]]
  if not ran:
    return {"rl_from_prior": None, "rl_from_scratch": None, "rl": None}
  score = {n: [r["policies"][n]["test"]["score"] for r in ran] for n in ("rl_from_prior", "rl_from_scratch")}
  curves = {n: {"env_steps": [pt["env_steps"] for pt in ran[0]["policies"][n]["curve"]],
                "score": np.mean([[pt["score"] for pt in r["policies"][n]["curve"]] for r in ran], 0).tolist()}
            for n in score}
  return {"rl_from_prior": float(np.mean(score["rl_from_prior"])),
          "rl_from_scratch": float(np.mean(score["rl_from_scratch"])),
          "rl": {"env_steps": ran[0]["policies"]["rl_from_prior"]["env_steps"],
                 "replications": len(ran), "score": {n: mean_std(v) for n, v in score.items()},
                 "paired": with_se(mean_std(np.subtract(score["rl_from_prior"], score["rl_from_scratch"]))),
                 "bc_idm_before": mean_std([r["policies"]["bc_idm"]["test"]["score"] for r in ran]),
                 "curves": curves}}


def run(c: ml_collections.ConfigDict, workdir: str, command: str) -> dict:
  validate(c)
  wd = Path(workdir)
  t_start = time.perf_counter()
  env = E.make_env(c.env)
  mesh = make_mesh(c.mesh.shape, c.mesh.axes)
  persistent_compilation_cache(wd / "xla_cache")   # the BC policies share one train step
  template = Policy(net_config(c.policy.net, env), rngs=nnx.Rngs(0))
  evaluator = Evaluator(env, template, c.eval.episodes, c.eval.steps, mesh)
  seeds = [c.seed + k for k in range(c.seeds)]
  reps = [replication(c, env, s, wd / f"seed{s}", mesh, evaluator, index=k)
          for k, s in enumerate(seeds)]
  results = summarise(reps)
  results.update({
      "replications": [public(r) for r in reps],
      "idm": reps[0]["idm"], "idm_scaling": reps[0]["idm_scaling"],
      "demonstrator": reps[0]["demonstrator"], "data": dict(reps[0]["data"], steps_per_episode=c.data.steps),
      "seeds": seeds,
      "timing_seconds": {"total": time.perf_counter() - t_start,
                         **{k: float(sum(r["timing_seconds"][k] for r in reps))
                            for k in reps[0]["timing_seconds"]}},
  })
  write(wd, command, c, results)
  return results
