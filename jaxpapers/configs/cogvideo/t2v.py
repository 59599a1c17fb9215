"""CogVideo text-to-video on the captioned moving-object world (CogVideo, arXiv 2205.15868).

The pipeline: a VQ-VAE tokenizer (§3, CogView's first stage) -> a text-to-image transformer on
captioned frames (the CogView2 analogue) -> three video models trained at equal compute (the same
steps and batch): `inherited` (the image model's parameters frozen as the spatial channel, a new
temporal channel, §3.2), `scratch` (the same dual-channel model from random initialisation, all
trained) and `one_stage` (inherited, trained on sequential generation only, sampled with a
sliding window) -> generation (stage 1 key frames, stage 2 recursive interpolation, §3.1) ->
evaluation by a classifier of real clips (caption accuracy, a Frechet distance of its features
against real clips: an FVD analogue, not FVD) and by measured motion (speed, frame-rate control).

Presets: default (about 4x quick's training; not yet run), `quick` (<= 15 CPU minutes on 2 cores),
`tiny` (seconds; tests)."""
import ml_collections

PRESETS = (None, "quick", "tiny")


def _train(**kw):
  t = dict(steps=600, batch=32, lr=1e-3, warmup=0.05, end_lr_ratio=0.1, weight_decay=0.01,
           b1=0.9, b2=0.95, eps=1e-8, clip=1.0, grad_accum=1, log_every=20, eval_every=0,
           ckpt_every=200, keep=2, on_nonfinite="skip", max_consecutive_skips=5,
           inject_nan_step=-1, tensorboard=False)
  t.update(kw)
  return t


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "cogvideo/t2v"
  c.seed = 0
  c.world = dict(two_object_prob=0.25)           # share of two-object clips in training
  c.vq = dict(codebook_size=128, code_dim=32, steps=800, batch=64, lr=1e-3, eval_size=0)
  c.classifier = dict(steps=300, batch=64, lr=2e-3)
  c.model = dict(num_layers=4, d_model=128, num_heads=4, ffn_dim=512,
                 window=2,                        # §3.3: 2x2 windows on the 4x4 code grid
                 remat=True)
  c.base_train = _train(steps=1500, lr=2e-3)      # the text-to-image model
  c.video_train = _train(steps=1500, lr=3e-3)     # each video model: equal compute
  c.video = dict(stage1_prob=0.5,                 # share of stage-1 rows (one_stage: 1.0)
                 stage1_fps=(8, 4), stage2_fps=8,
                 caption_dropout=0.1)             # for classifier-free guidance
  c.sample = dict(guidance=3.0,                   # release: CFG 3.0 in stage 1, none in stage 2
                  stage2_guidance=1.0, top_k=16, temperature=1.0,
                  keyframe_fps=4,                 # stage 1 -> 5 key frames at 4 fps
                  one_stage_overlap=3,            # frames the sliding window carries over
                  videos_per_combo=6, real_per_combo=24,
                  frame_rate_per_combo=2,         # clips per caption for frame-rate control
                  eval_combos=0)                  # 0: all 32 caption combinations; n: held-out first
  c.mesh = dict(shape=(-1,), axes=("data",))
  if arg == "quick":
    c.vq.update(steps=400)
    c.base_train.update(steps=600)
    c.video_train.update(steps=320)
  elif arg == "tiny":
    c.vq.update(steps=5, batch=16, channels=8, codebook_size=32, code_dim=8)
    c.classifier.update(steps=3, batch=16, channels=4, features=8, eval_size=32)
    c.model.update(num_layers=2, d_model=32, num_heads=2, ffn_dim=64, remat=False)
    c.base_train.update(steps=2, batch=8, log_every=1, ckpt_every=2)
    c.video_train.update(steps=2, batch=8, log_every=1, ckpt_every=2)
    c.sample.update(videos_per_combo=2, real_per_combo=8, frame_rate_per_combo=1, top_k=4,
                    eval_combos=2)
  return c
