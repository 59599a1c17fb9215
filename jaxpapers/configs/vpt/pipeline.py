"""VPT (arXiv 2206.11795) in Craftax-Classic: IDM on a small labelled split, pseudo-labels of the
rest, BC on IDM labels vs the small split vs true labels, evaluated in the game.

Presets: default (<= 90 min, 3 replications), `quick` (2 CPU cores, <= 15 min, 2 replications),
`tiny` (seconds; tests)."""
import ml_collections

PRESETS = (None, "default", "quick", "tiny")

_TRAIN = dict(steps=0, batch=32, lr=1e-3, warmup=0.05, end_lr_ratio=0.1, weight_decay=0.01,
              b1=0.9, b2=0.999, eps=1e-8, clip=1.0, grad_accum=1, log_every=25, eval_every=0,
              ckpt_every=10_000, keep=1, on_nonfinite="skip", inject_nan_step=-1, tensorboard=False)
_NET = dict(window=16, stem_channels=32, channels=(32, 64), blocks_per_stage=1, d_model=128,
            heads=4, layers=2)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "vpt/pipeline"
  c.env = "Craftax-Classic-Pixels-v1"
  # replications: seed c.seed + k draws replication k's demonstrations, labelled split, IDM, BC
  # policies and validation/test worlds
  c.seed = 0
  c.seeds = 3
  c.mesh = dict(shape=(-1,), axes=("data",))
  # styles: the probabilities of the builder, farmer and explorer demonstrators (vpt.demonstrator)
  c.demonstrator = dict(random_move=0.08, noop=0.04, table_range=6, styles=(0.4, 0.3, 0.3))
  c.data = dict(episodes=320, steps=250, test_episodes=16, labelled_fraction=0.125)
  # the headline IDM learns from pixels; motion_ablation: in this many replications (the first
  # ones), the same IDM with tile_motion's hand-made features beside it (models.tile_motion); scaling: IDMs on these fractions of the
  # labelled set (first replication), trained for the same number of steps as the full one
  # identifiability: the ceiling of two-frame IDM accuracy on fresh demonstrator episodes
  # (vpt.identifiability; first replication, data.test_episodes worlds)
  c.idm = dict(net=dict(_NET, temporal_kernel=5, tile_features=16), motion_ablation=1,
               identifiability=True, train=dict(_TRAIN, steps=1500, batch=16, lr=3e-3),
               scaling=(0.25, 0.5))
  # BC: no-op targets dropped (VPT's loader); the length is chosen on validation worlds every
  # eval_every steps; no checkpoints (each policy is a sub-run with its own result.json)
  # the policy: each frame attends to the last `memory` frames (VPT: 128) through a cache of their
  # keys and values when it plays; trained on windows of `window` frames whose first
  # layers x (memory - 1) positions are context only (models.Policy, data.policy_targets)
  c.policy = dict(net=dict(_NET, window=32, memory=8), drop_null=True,
                  train=dict(_TRAIN, steps=2500, batch=8, lr=2e-3, eval_every=500, ckpt_every=0))
  # (default preset sized from step-time probes to fit 90 minutes: 6 IDMs of 1,500 steps, 9 BC
  # policies of 2,500 memory steps, 6 RL runs; run whole at 43e74d4 in 85 min on 2 CPU cores)
  c.eval = dict(episodes=64, steps=250, gif_episodes=2)
  # RL fine-tuning (VPT 4.4, vpt.rl): in the first `replications` replications, PPO from the
  # BC(IDM) policy with a KL penalty towards it (rl_from_prior) and from a random policy
  # (rl_from_scratch), each for iterations x envs x steps environment steps (whole episodes)
  c.rl = dict(replications=3, iterations=20, envs=16, steps=250, epochs=2, minibatch_envs=4,
              lr=1e-4, gamma=0.99, lam=0.95, clip=0.2, vf_coef=0.5, ent_coef=0.01, kl_coef=0.2,
              max_grad_norm=0.5)
  if arg == "quick":
    c.seeds = 2
    c.data.update(episodes=160, test_episodes=16)
    c.idm.train.update(steps=650)
    c.idm.scaling = ()                          # the data-scaling curve: default preset
    c.idm.motion_ablation = 0                   # the tile_motion ablation: default preset
    # a memory step costs ~1.8x the old 4-frame policy's: 600 steps fit the 15 minutes
    c.policy.net.update(window=16, memory=4)
    c.policy.train.update(steps=600, batch=12, eval_every=300)
    c.eval.update(episodes=32)
    c.rl.replications = 0                       # RL fine-tuning: default preset
  elif arg == "tiny":
    c.seeds = 1
    c.data.update(episodes=8, steps=20, test_episodes=2, labelled_fraction=0.25)
    net = dict(window=4, stem_channels=8, channels=(8,), d_model=16, heads=2, layers=1)
    c.idm.net.update(net)
    c.idm.motion_ablation = 0
    c.idm.identifiability = False
    c.idm.train.update(steps=2, batch=8, log_every=1)
    c.idm.scaling = ()
    c.policy.net.update(net, memory=2)
    c.policy.train.update(steps=2, batch=8, log_every=1, eval_every=1)
    c.eval.update(episodes=4, steps=12, gif_episodes=1)
    # RL's rollouts (envs x steps + 1) the evaluation's program (episodes x steps): compiled once
    c.rl.update(replications=1, iterations=1, envs=4, steps=11, minibatch_envs=2)
  return c
