"""Students in the MOOC world: a seeded, documented simulator vectorised in JAX over students
(each student's random draws come from its own key through `vmap`; the dynamics run on batched
[concept/video/course, student] arrays under `lax.scan` over steps), and the token sequences the
behaviour model reads.

A student has an ability theta ~ N(0, 1) and a skill per concept, starting at
theta + skill_offset + N(0, skill_noise). Mastery of concept k is m_k = sigmoid(kappa (s_k - b_k)).
A video's readiness is the least mastery among its concept's prerequisites (1 without any).

Each step (at most `steps`):
 1. Choose a video. The next video of the current course (the first of the entry course at step
    0; when the course is finished, the first video of another course drawn by popularity x
    interest); after step 0, with probability p_skip the one after it. A *sequential* student (probability
    p_sequential) jumps with probability p_jump_sequential, a *jumping* one with p_jump; a jump
    looks at `jump_candidates` videos drawn uniformly and takes one with probability proportional
    to exp(a_ready * readiness + log interest(course) - a_watched * watched).
 2. Watch it: completion = sigmoid(c0 + c_quality (q_v - 0.5) + c_ready (ready_v - 0.5)
    + N(0, c_noise)); the skill of its concept grows by learn_rate * q_v * completion * ready_v
    (prerequisites gate learning).
 3. With probability p_exercise answer one of the concept's exercises (uniform): IRT with guessing
    and slipping, P(correct) = guess + (1 - guess - slip) sigmoid(1.7 (s_k - b_x)); practice adds
    practice_right or practice_wrong to s_k.
 4. Drop out with hazard sigmoid(h0 + h_fail f - h_engage (e - 0.5)), f and e exponential moving
    averages (rate ema) of failures and of completion: after this step's events, nothing more.

Tokens: a watch is the video id with its completion quartile as the response (0-3); an exercise
is n_videos + exercise id with response 4 (wrong) or 5 (right); a student's tokens in time order.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from jaxpapers.core.errors import ConfigError
from jaxpapers.mooc.world import World

WRONG, RIGHT = 4, 5          # exercise responses; 0-3 are a watch's completion quartile
N_RESPONSES = 6


@dataclasses.dataclass(frozen=True)
class StudentConfig:
  steps: int = 32
  p_sequential: float = 0.55
  p_skip: float = 0.1
  p_jump: float = 0.45
  p_jump_sequential: float = 0.03
  jump_candidates: int = 16
  a_ready: float = 3.0
  a_watched: float = 2.0
  interest_sigma: float = 1.0
  skill_offset: float = -0.8
  skill_noise: float = 0.5
  kappa: float = 3.0
  c0: float = 0.8
  c_quality: float = 4.0
  c_ready: float = 2.0
  c_noise: float = 0.7
  learn_rate: float = 0.8
  p_exercise: float = 0.6
  guess: float = 0.2
  slip: float = 0.1
  practice_right: float = 0.1
  practice_wrong: float = 0.05
  h0: float = -4.4
  h_fail: float = 2.5
  h_engage: float = 3.0
  ema: float = 0.3


def validate(s: StudentConfig) -> None:
  if s.jump_candidates < 1:
    raise ConfigError(f"--config.students.jump_candidates={s.jump_candidates}: must be >= 1")
  if s.steps < 2:
    raise ConfigError(f"--config.students.steps={s.steps}: must be >= 2")
  for name in ("p_sequential", "p_skip", "p_jump", "p_jump_sequential", "p_exercise", "guess",
               "slip", "ema"):
    if not 0 <= getattr(s, name) <= 1:
      raise ConfigError(f"--config.students.{name}={getattr(s, name)}: must be in [0, 1]")
  if s.guess + s.slip >= 1:
    raise ConfigError(f"--config.students.guess + slip = {s.guess + s.slip}: must be < 1")


def _world_arrays(w: World) -> dict:
  return dict(prereq=jnp.asarray(w.prereq), difficulty=jnp.asarray(w.concept_difficulty, jnp.float32),
              v_concept=jnp.asarray(w.video_concept), v_course=jnp.asarray(w.video_course),
              v_next=jnp.asarray(w.video_next), quality=jnp.asarray(w.video_quality, jnp.float32),
              first=jnp.asarray(w.course_first_video),
              log_pop=jnp.log(jnp.asarray(w.course_popularity, jnp.float32)),
              ex_of=jnp.asarray(w.concept_exercises),
              ex_diff=jnp.asarray(w.exercise_difficulty, jnp.float32))


def _categorical(u, logits):
  """Draws from softmax(logits) over axis 0 ([n, B] -> [B]) by inverting the CDF at the uniforms
  u [B] (one random number per draw)."""
  cdf = jnp.cumsum(jax.nn.softmax(logits, axis=0), axis=0)
  return jnp.minimum((cdf < u * cdf[-1]).sum(0), logits.shape[0] - 1).astype(jnp.int32)


def readiness(skill, difficulty, prereq, kappa):
  """[K, B] the least mastery sigmoid(kappa (s_j - b_j)) over each concept's prerequisites j
  (skill [K, B], difficulty [K], prereq [K, MAX_PREREQ] with -1 = none)."""
  mastery = jax.nn.sigmoid(kappa * (skill - difficulty[:, None]))
  return jnp.where((prereq >= 0)[..., None], mastery[jnp.maximum(prereq, 0)], 1.0).min(1)


def _pick(table, idx):
  """table [n, B], idx [B] -> table[idx[b], b]."""
  return jnp.take_along_axis(table, idx[None], 0)[0]


@functools.partial(jax.jit, static_argnames=("s",))
def _simulate(key, a: dict, s: StudentConfig):
  """One batch of students. Arrays are concept-, video- or course-major ([K, B], [V, B], [C, B]):
  the per-step gathers then copy whole rows, which is several times faster on CPU than the same
  gathers under `vmap` (student-major)."""
  K, V, C = a["difficulty"].shape[0], a["v_concept"].shape[0], a["first"].shape[0]
  B = key.shape[0]
  draws = jax.vmap(lambda k: jax.random.normal(k, (3 + K + C,)))(key)   # per student: seeded by its own key
  ability, style_u, entry_u = draws[:, 0], jax.scipy.stats.norm.cdf(draws[:, 1]), \
      jax.scipy.stats.norm.cdf(draws[:, 2])
  skill0 = (ability + s.skill_offset)[None] + s.skill_noise * draws[:, 3:3 + K].T       # [K, B]
  log_interest = s.interest_sigma * draws[:, 3 + K:].T                                  # [C, B]
  sequential = style_u < s.p_sequential
  entry = _categorical(entry_u, a["log_pop"][:, None] + log_interest)
  p_jump = jnp.where(sequential, s.p_jump_sequential, s.p_jump)
  cols = jnp.arange(B)

  def step(carry, u):
    skill, prev, watched, fail, eng, dropped = carry
    ready_k = readiness(skill, a["difficulty"], a["prereq"], s.kappa)
    nxt = jnp.where(prev < 0, a["first"][entry], a["v_next"][jnp.maximum(prev, 0)])
    finished = jnp.arange(C)[:, None] == a["v_course"][jnp.maximum(prev, 0)][None]
    new_course = _categorical(u[0], a["log_pop"][:, None] + log_interest - 1e9 * finished)
    nxt = jnp.where(nxt < 0, a["first"][new_course], nxt)
    after = a["v_next"][nxt]
    nxt = jnp.where((u[1] < s.p_skip) & (after >= 0) & (prev >= 0), after, nxt)
    cand = jnp.minimum((u[9:] * V).astype(jnp.int32), V - 1)                         # [m, B]
    jump_logits = (s.a_ready * ready_k[a["v_concept"][cand], cols]
                   + log_interest[a["v_course"][cand], cols] - s.a_watched * watched[cand, cols])
    jumped = (u[2] < p_jump) & (prev >= 0)
    v = jnp.where(jumped, _pick(cand, _categorical(u[3], jump_logits)), nxt)
    k = a["v_concept"][v]
    q = a["quality"][v]
    ready = ready_k[k, cols]
    completion = jax.nn.sigmoid(s.c0 + s.c_quality * (q - 0.5) + s.c_ready * (ready - 0.5)
                                + s.c_noise * ndtri(u[4]))
    skill_before = _pick(skill, k)
    gain = s.learn_rate * q * completion * ready
    at_k = jnp.arange(K)[:, None] == k[None]
    skill = skill + jnp.where(at_k, gain[None], 0.0)
    has_ex = u[5] < s.p_exercise
    n_ex = a["ex_of"].shape[1]
    x = a["ex_of"][k, jnp.minimum((u[6] * n_ex).astype(jnp.int32), n_ex - 1)]
    skill_at_answer = skill_before + gain
    p_correct = s.guess + (1 - s.guess - s.slip) * jax.nn.sigmoid(
        1.7 * (skill_at_answer - a["ex_diff"][x]))
    correct = u[7] < p_correct
    skill = skill + jnp.where(at_k & has_ex[None], jnp.where(correct, s.practice_right,
                                                              s.practice_wrong)[None], 0.0)
    fail = jnp.where(has_ex, (1 - s.ema) * fail + s.ema * (1.0 - correct), fail)
    eng = (1 - s.ema) * eng + s.ema * completion
    hazard = jax.nn.sigmoid(s.h0 + s.h_fail * fail - s.h_engage * (eng - 0.5))
    out = dict(active=~dropped, video=v, jumped=jumped, completion=completion, ready=ready,
               gain=gain, skill_before=skill_before, has_exercise=has_ex, exercise=x,
               skill_at_answer=skill_at_answer, p_correct=p_correct, correct=correct,
               hazard=hazard)
    dropped = dropped | (u[8] < hazard)
    watched = jnp.maximum(watched, (jnp.arange(V)[:, None] == v[None]).astype(jnp.float32))
    return (skill, v, watched, fail, eng, dropped), out

  us = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 1), (s.steps, 9 + s.jump_candidates),
                                             minval=1e-7, maxval=1 - 1e-7))(key)   # [B, T, 9 + m]
  init = (skill0, jnp.full(B, -1, jnp.int32), jnp.zeros((V, B)), jnp.zeros(B), jnp.full(B, 0.5),
          jnp.zeros(B, bool))
  _, trace = jax.lax.scan(step, init, us.transpose(1, 2, 0))
  trace = jax.tree.map(lambda x: x.T, trace)                                        # [B, T]
  return trace | dict(ability=ability, sequential=sequential, entry=entry)


def simulate(world: World, s: StudentConfig, n_students: int, seed: int,
             chunk: int = 16384) -> dict:
  """Per-step traces [N, steps] (and per-student ability, sequential, entry) as numpy."""
  validate(s)
  a = _world_arrays(world)
  chunk = min(chunk, n_students)
  n_pad = -n_students % chunk          # every call the same shape: one compilation
  keys = jax.random.split(jax.random.key(seed), n_students + n_pad)
  parts = [jax.tree.map(np.asarray, _simulate(keys[i:i + chunk], a, s))
           for i in range(0, n_students + n_pad, chunk)]
  return {k: np.concatenate([p[k] for p in parts])[:n_students] for k in parts[0]}


@dataclasses.dataclass
class Logs:
  """Token sequences, left-aligned, padded with item -1 (see the module docstring)."""
  items: np.ndarray       # [N, L] int32
  responses: np.ndarray   # [N, L] int32
  length: np.ndarray      # [N]
  dropped: np.ndarray     # [N] bool: the student dropped out before the last step
  sequential: np.ndarray  # [N] bool
  n_videos: int
  p_correct: np.ndarray | None = None   # [N, L] the simulator's P(right) at exercise tokens

  def __len__(self) -> int:
    return len(self.length)

  def subset(self, idx) -> "Logs":
    return Logs(self.items[idx], self.responses[idx], self.length[idx], self.dropped[idx],
                self.sequential[idx], self.n_videos,
                None if self.p_correct is None else self.p_correct[idx])


def to_logs(trace: dict, n_videos: int) -> Logs:
  """Two slots per step (watch, then the exercise if any), active steps only, in time order."""
  N, T = trace["video"].shape
  item = np.stack([trace["video"], n_videos + trace["exercise"]], -1).reshape(N, 2 * T)
  quart = np.minimum((trace["completion"] * 4).astype(np.int32), 3)
  resp = np.stack([quart, np.where(trace["correct"], RIGHT, WRONG)], -1).reshape(N, 2 * T)
  valid = np.stack([trace["active"], trace["active"] & trace["has_exercise"]], -1).reshape(N, 2 * T)
  order = np.argsort(~valid, axis=1, kind="stable")
  items = np.take_along_axis(np.where(valid, item, -1), order, 1).astype(np.int32)
  responses = np.take_along_axis(np.where(valid, resp, 0), order, 1).astype(np.int32)
  p = np.stack([np.zeros_like(trace["completion"]), trace["p_correct"]], -1).reshape(N, 2 * T) \
      if "p_correct" in trace else np.zeros((N, 2 * T))
  return Logs(items=items, responses=responses, length=valid.sum(1),
              dropped=~trace["active"][:, -1],   # a drop drawn after the last step is not seen
              sequential=trace["sequential"], n_videos=n_videos,
              p_correct=np.take_along_axis(np.where(valid, p, 0.0), order, 1).astype(np.float32))
