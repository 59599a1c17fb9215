"""IAAD (arXiv 2207.00737): intra-frame, inter-frame and planning fusion and the adaptive choice,
swept over network levels in the closed-loop simulator (jaxpapers/iaad).

Each level is (name, base_ms, slope_ms per 100 m from the RSU, jitter (log-normal sigma), p_gb,
p_bg, loss_bad) of jaxpapers/iaad/network.py; handover zones add `handover_ms` and raise p_gb to
`p_gb_handover`. `--config.network.trace=FILE.csv` replaces the levels with one measured trace
(columns time_s, latency_ms, lost). Every level runs the same episodes (same worlds and sensor
noise), so the curves are paired across levels as well as across methods.

Presets: default (2 seeds x 2048 episodes, 2.1 min on 2 CPU cores), `quick` (2 seeds x 512, 0.9 min),
`tiny` (tests).
"""
import ml_collections

PRESETS = (None, "default", "quick", "tiny")

LEVELS = (
    ("excellent", 20.0, 10.0, 0.3, 0.002, 0.5, 0.5),
    ("good", 50.0, 30.0, 0.4, 0.01, 0.3, 0.8),
    ("fair", 90.0, 60.0, 0.5, 0.03, 0.2, 0.9),
    ("poor", 150.0, 120.0, 0.6, 0.05, 0.12, 1.0),
    ("bad", 250.0, 200.0, 0.7, 0.08, 0.08, 1.0),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "iaad/sweep"
  c.seed = 0
  c.seeds = 2                    # seed, seed+1: every world, sensor draw and network draw
  c.episodes = 2048              # per seed (the same episodes at every level)
  c.batch = 512                  # episodes per compiled call
  c.scenario = dict(frames=200, dt=0.1, road_length=320.0, ego_speed=15.0, n_parked=4,
                    n_pedestrians=2, n_oncoming=2, cross_prob=0.8, trigger_min=1.6,
                    trigger_max=4.0, rsu_x=160.0, rsu_y=-6.0, rsu_range=110.0, comm_range=260.0,
                    ego_range=60.0, ego_sigma=0.2, ego_vel_sigma=0.3, ego_p_det=0.95,
                    ego_fp_slots=2, ego_fp_rate=0.02, rsu_sigma=0.3, rsu_p_det=0.95)
  c.network = dict(levels=LEVELS, handover_x=(110.0, 215.0), handover_width=10.0,
                   handover_ms=200.0, p_gb_handover=0.3, trace="")
  c.fusion = dict(deadline_ms=100.0, gate=2.5, inter_max_age=0.5, plan_max_age=3.0,
                  accel_sigma=3.0, confirm_hits=3, drop_misses=5)
  c.planner = dict(v0=15.0, headway=1.2, a_max=1.5, b_comf=2.0, b_max=8.0, s0=2.0,
                   half_width=2.1)
  c.scoring = dict(roi_behind=20.0, roi_ahead=80.0, roi_half_width=8.0, match_gate=2.0,
                   near_ttc=1.0, near_gap=0.5)
  c.report = dict(gif=True, gif_level="fair", gif_frames=80)
  if arg == "quick":
    c.episodes = 512
  elif arg == "tiny":
    c.seeds = 1
    c.episodes = 8
    c.batch = 8
    c.scenario.frames = 60
    c.network.levels = LEVELS[0:5:4]
    c.report.update(gif_level="bad", gif_frames=20)
  return c
