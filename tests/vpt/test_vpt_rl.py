"""RL fine-tuning (VPT §4.4): GAE against a hand computation (an episode that ends, one cut by the
rollout), the KL penalty zero at the prior and positive away from it, the prior saved and loaded
whole (a tiny PPO run in Craftax is part of tests/vpt/test_vpt_pipeline.py)."""
import jax
import pytest
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpapers.vpt.models import NetConfig, Policy
from jaxpapers.vpt.rl import ActorCritic, PPOConfig, gae, ppo_loss
from jp_testutil import assert_close_scaled

NET = NetConfig(window=6, stem_channels=8, tile_features=4, channels=(8,), d_model=16, heads=2,
                layers=1, memory=2)


def test_gae_by_hand():
  g, lam = 0.9, 0.5
  rewards = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 0.0, 1.0]], np.float32)
  alive = np.array([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]], bool)
  after = np.array([False, True, False])      # 0 ends after step 2, 1 is cut, 2 ends at the last step
  rewards = np.concatenate([rewards, [[0.0, 0.0, 1.0, 1.0]]]).astype(np.float32)
  values = np.array([[0.5, 0.4, 0.3, 0.2, 0.1], [1.0, 1.0, 1.0, 1.0, 2.0], [0.1, 0.2, 0.3, 0.4, 5.0]],
                    np.float32)
  adv, ret = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(alive), g, lam, after)
  want = np.zeros((3, 4))
  for n in range(3):
    nxt = 0.0
    for t in reversed(range(4)):
      if not alive[n, t]:
        continue
      cont = alive[n, t + 1] if t + 1 < 4 else after[n]          # cut: bootstrap; ended: not
      delta = rewards[n, t] + g * values[n, t + 1] * cont - values[n, t]
      nxt = delta + g * lam * cont * nxt
      want[n, t] = nxt
  assert_close_scaled(adv, want, 1e-6)
  assert_close_scaled(ret, (want + values[:, :-1]) * alive, 1e-6)
  assert adv[0, 3] == 0.0 and ret[0, 3] == 0.0
  assert adv[2, 3] == pytest.approx(1.0 - 0.4)               # no bootstrap from V = 5 after the end


def _batch(model, frames, actions):
  logits, _ = model(frames)
  logp_all = jax.nn.log_softmax(logits[:, :-1])
  n, t = actions.shape
  return {"frames": frames, "actions": actions, "alive": jnp.ones((n, t), bool),
          "logp": jnp.take_along_axis(logp_all, actions[..., None], -1)[..., 0],
          "adv": jax.random.normal(jax.random.key(3), (n, t)), "returns": jnp.zeros((n, t)),
          "prior_logp": logp_all}


def test_loss_terms_by_hand_and_dead_steps_ignored():
  """KL(pi || prior) (not the reverse), the entropy, and the clipped surrogate against a numpy
  computation; steps after an episode ended change nothing."""
  model = ActorCritic(Policy(NET, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
  frames = jax.random.randint(jax.random.key(0), (2, 5, 63, 63, 3), 0, 256).astype(jnp.uint8)
  actions = jax.random.randint(jax.random.key(1), (2, 4), 0, 17)
  batch = _batch(model, frames, actions)
  prior = jax.nn.log_softmax(3.0 * jax.random.normal(jax.random.key(4), batch["prior_logp"].shape))
  old_logp = batch["logp"] + 0.3 * jax.random.normal(jax.random.key(5), batch["logp"].shape)
  alive = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
  batch = batch | {"prior_logp": prior, "logp": old_logp, "alive": alive}
  cfg = PPOConfig()
  _, m = ppo_loss(model, batch, cfg)
  lp = np.asarray(jax.nn.log_softmax(model(frames)[0][:, :-1]), np.float64)
  a, w = np.asarray(alive), np.asarray(alive, np.float64)
  kl = ((np.exp(lp) * (lp - np.asarray(prior))).sum(-1) * w).sum() / w.sum()
  ent = ((-(np.exp(lp) * lp).sum(-1)) * w).sum() / w.sum()
  adv = np.asarray(batch["adv"], np.float64)
  adv = (adv - adv[a].mean()) / (adv[a].std() + 1e-8)
  ratio = np.exp(np.take_along_axis(lp, np.asarray(actions)[..., None], -1)[..., 0] - np.asarray(old_logp))
  pg = -(np.minimum(ratio * adv, np.clip(ratio, 0.8, 1.2) * adv) * w).sum() / w.sum()
  for got, want in ((m["kl_to_prior"], kl), (m["entropy"], ent), (m["policy"], pg)):
    assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-6)
  dead = batch | {"adv": batch["adv"].at[0, 3].set(1e3), "returns": batch["returns"].at[0, 3].set(1e3)}
  loss, _ = ppo_loss(model, dead, cfg)
  assert float(loss) == pytest.approx(float(ppo_loss(model, batch, cfg)[0]), rel=1e-6)


def test_kl_to_prior_is_zero_at_the_prior_and_positive_away():
  model = ActorCritic(Policy(NET, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
  frames = jax.random.randint(jax.random.key(0), (2, 5, 63, 63, 3), 0, 256).astype(jnp.uint8)
  actions = jax.random.randint(jax.random.key(1), (2, 4), 0, 17)
  batch = _batch(model, frames, actions)
  _, m = ppo_loss(model, batch, PPOConfig())
  assert abs(float(m["kl_to_prior"])) < 1e-6
  other = ActorCritic(Policy(NET, rngs=nnx.Rngs(7)), rngs=nnx.Rngs(1))
  _, m = ppo_loss(model, _batch(other, frames, actions) | {"logp": batch["logp"]}, PPOConfig())
  assert float(m["kl_to_prior"]) > 1e-3


def test_the_prior_is_saved_and_loaded_whole(tmp_path):
  """RL from the prior starts from BC(IDM)'s chosen parameters as saved; another architecture's
  file is refused in one line."""
  import pytest
  from jaxpapers.core.errors import WorkdirError
  from jaxpapers.core.checkpoint import load_params_npz, save_params_npz
  a, b = Policy(NET, rngs=nnx.Rngs(0)), Policy(NET, rngs=nnx.Rngs(5))
  save_params_npz(tmp_path / "chosen.npz", a)
  load_params_npz(tmp_path / "chosen.npz", b)
  for x, y in zip(jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param))):
    np.testing.assert_array_equal(x, y)
  import dataclasses
  wider = Policy(dataclasses.replace(NET, d_model=32), rngs=nnx.Rngs(0))
  with pytest.raises(WorkdirError, match="another architecture"):
    load_params_npz(tmp_path / "chosen.npz", wider)
