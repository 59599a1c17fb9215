"""The static side of the MOOC simulator: courses, chapters, videos with subtitles, concepts with a
prerequisite graph, exercises, course meta-information and each video's ground-truth quality.

Courses and concepts come from WordNet 3.0 (`jaxpapers/data/assets/mooc_courses.json.xz`, made by
experiments/mooc/build_concepts.py): a course is a noun synset's hyponym subtree, a concept one of
its synsets, and a video's subtitle that concept's lemma, gloss and example, so the text a
pre-trained text encoder reads is real text. Every random choice below is drawn from `seed`.

Prerequisites of a concept (at most `MAX_PREREQ`): its WordNet parent inside the course; with
probability `extra_prereq` an earlier concept of the same course; and, for a course's root with
probability `cross_prereq`, a concept of another course (so jumping across courses can pay off).
A course teaches (up to `concepts_per_course` of) its concepts in breadth-first order (a few
WordNet courses have fewer than 24), `videos_per_concept` videos each (a second
video with probability `p_second_video`), `concepts_per_chapter` concepts per chapter. Concept
difficulty grows with depth: b_k = diff_base + diff_depth * depth_k + N(0, diff_noise); each
exercise's difficulty is b_k + N(0, ex_noise). Video quality ~ Beta(quality_a, quality_b).
Course popularity (which course a student enrols in first) is Zipf(popularity_exponent) over a
random order of the courses. Meta-information per course: its id, its field (the WordNet
lexicographer file of the root, e.g. noun.artifact) and a school (uniform over `n_schools`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import lzma
from pathlib import Path

import numpy as np

from jaxpapers.core.errors import ConfigError

ASSET = Path(__file__).resolve().parents[1] / "data" / "assets" / "mooc_courses.json.xz"
MAX_PREREQ = 3


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  n_courses: int = 16
  concepts_per_course: int = 12
  concepts_per_chapter: int = 3
  p_second_video: float = 0.4
  exercises_per_concept: int = 3
  n_schools: int = 6
  extra_prereq: float = 0.25
  cross_prereq: float = 0.5
  diff_base: float = -0.6
  diff_depth: float = 0.6
  diff_noise: float = 0.3
  ex_noise: float = 0.4
  quality_a: float = 4.0
  quality_b: float = 2.0
  popularity_exponent: float = 1.0


@functools.lru_cache(maxsize=1)
def load_courses() -> list[dict]:
  with lzma.open(ASSET, "rt") as f:
    return json.load(f)


@dataclasses.dataclass
class World:
  """Arrays indexed by concept k, video v, exercise x or course c (numpy)."""
  course_name: list[str]
  course_field: np.ndarray      # [C] field id
  field_names: list[str]
  course_school: np.ndarray     # [C]
  course_popularity: np.ndarray  # [C] probabilities
  course_first_video: np.ndarray  # [C]
  concept_course: np.ndarray    # [K]
  concept_lemma: list[str]
  concept_depth: np.ndarray     # [K]
  concept_difficulty: np.ndarray  # [K]
  prereq: np.ndarray            # [K, MAX_PREREQ] concept ids, -1 = none
  video_concept: np.ndarray     # [V]
  video_course: np.ndarray      # [V]
  video_chapter: np.ndarray     # [V] chapter index inside its course
  video_next: np.ndarray        # [V] the next video of the course, -1 after the last
  video_quality: np.ndarray     # [V] ground truth in (0, 1)
  video_text: list[str]         # [V] subtitles
  exercise_concept: np.ndarray  # [X]
  exercise_difficulty: np.ndarray  # [X]
  concept_exercises: np.ndarray  # [K, exercises_per_concept]

  @property
  def n_videos(self) -> int:
    return len(self.video_concept)

  @property
  def n_exercises(self) -> int:
    return len(self.exercise_concept)

  @property
  def n_concepts(self) -> int:
    return len(self.concept_course)

  @property
  def n_courses(self) -> int:
    return len(self.course_field)


def validate(w: WorldConfig) -> None:
  courses = load_courses()
  if not 1 <= w.n_courses <= len(courses):
    raise ConfigError(f"--config.world.n_courses={w.n_courses}: must be in [1, {len(courses)}] "
                      "(the courses the WordNet asset holds)")
  if not 2 <= w.concepts_per_course <= 24:
    raise ConfigError(f"--config.world.concepts_per_course={w.concepts_per_course}: must be in [2, 24]")
  for name in ("concepts_per_chapter", "exercises_per_concept", "n_schools"):
    if getattr(w, name) < 1:
      raise ConfigError(f"--config.world.{name}={getattr(w, name)}: must be >= 1")
  for name in ("p_second_video", "extra_prereq", "cross_prereq"):
    if not 0 <= getattr(w, name) <= 1:
      raise ConfigError(f"--config.world.{name}={getattr(w, name)}: must be a probability in [0, 1]")
  if min(w.quality_a, w.quality_b) <= 0:
    raise ConfigError("--config.world.quality_a, quality_b: must be > 0 (Beta parameters)")


def make_world(w: WorldConfig, seed: int) -> World:
  validate(w)
  rng = np.random.default_rng([seed, 7001])
  all_courses = load_courses()
  chosen = rng.choice(len(all_courses), size=w.n_courses, replace=False)
  fields = sorted({all_courses[i]["field"] for i in chosen})
  C, per = w.n_courses, w.concepts_per_course
  concept_course, lemma, depth, parent, texts_of = [], [], [], [], []
  for c, i in enumerate(chosen):
    cs = [k for k in all_courses[i]["concepts"][:per]]
    base = len(lemma)
    d = []
    for j, k in enumerate(cs):
      p = k["parent"] if k["parent"] < len(cs) else -1
      d.append(0 if p < 0 else d[p] + 1)
      parent.append(base + p if p >= 0 else -1)
      concept_course.append(c)
      lemma.append(k["lemma"])
      texts_of.append((k["lemma"], k["gloss"], k["example"]))
    depth += d
  K = len(lemma)
  concept_course = np.array(concept_course)
  depth = np.array(depth)
  prereq = -np.ones((K, MAX_PREREQ), np.int32)
  course_start = np.searchsorted(concept_course, np.arange(C))
  for k in range(K):
    reqs = [parent[k]] if parent[k] >= 0 else []
    j = k - course_start[concept_course[k]]
    if j >= 2 and rng.random() < w.extra_prereq:
      cand = int(course_start[concept_course[k]] + rng.integers(0, j))
      if cand not in reqs:
        reqs.append(cand)
    if j == 0 and C > 1 and rng.random() < w.cross_prereq:
      other = int(rng.choice([c for c in range(C) if c != concept_course[k]]))
      reqs.append(int(course_start[other] + rng.integers(0, min(per, 3))))
    prereq[k, :len(reqs)] = reqs[:MAX_PREREQ]
  difficulty = w.diff_base + w.diff_depth * depth + rng.normal(0, w.diff_noise, K)

  v_concept, v_course, v_chapter, v_text = [], [], [], []
  for k in range(K):
    n = 1 + int(rng.random() < w.p_second_video)
    lem, gloss, example = texts_of[k]
    for m in range(n):
      v_concept.append(k)
      v_course.append(int(concept_course[k]))
      v_chapter.append(int((k - course_start[concept_course[k]]) // w.concepts_per_chapter))
      if m == 0:
        v_text.append(f"{lem}: {gloss}.")
      else:
        v_text.append(f"more on {lem}, for example: {example or gloss}.")
  V = len(v_concept)
  v_course = np.array(v_course)
  v_next = np.append(np.arange(1, V), -1)
  last = np.append(v_course[1:] != v_course[:-1], True)
  v_next[last] = -1
  first_video = np.searchsorted(v_course, np.arange(C))
  quality = rng.beta(w.quality_a, w.quality_b, V)

  X = K * w.exercises_per_concept
  ex_concept = np.repeat(np.arange(K), w.exercises_per_concept)
  ex_diff = difficulty[ex_concept] + rng.normal(0, w.ex_noise, X)
  rank = rng.permutation(C)
  pop = 1.0 / (1 + rank) ** w.popularity_exponent
  return World(course_name=[all_courses[i]["name"] for i in chosen],
               course_field=np.array([fields.index(all_courses[i]["field"]) for i in chosen]),
               field_names=fields, course_school=rng.integers(0, w.n_schools, C),
               course_popularity=pop / pop.sum(), course_first_video=first_video,
               concept_course=concept_course, concept_lemma=lemma, concept_depth=depth,
               concept_difficulty=difficulty, prereq=prereq, video_concept=np.array(v_concept),
               video_course=v_course, video_chapter=np.array(v_chapter), video_next=v_next,
               video_quality=quality, video_text=v_text, exercise_concept=ex_concept,
               exercise_difficulty=ex_diff,
               concept_exercises=np.arange(X).reshape(K, w.exercises_per_concept))
