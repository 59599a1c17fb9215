"""How fast the MOOC student simulator generates students (jaxpapers/mooc/simulator.py).

Prints JSON: the seconds to simulate --students students of the default world and StudentConfig
(32 steps) once compiled, the compile-inclusive first call on a small batch, and students/s.

    python experiments/bench/mooc_simulator.py [--students 100000]
"""
import argparse
import json
import time

import jax

from jaxpapers.mooc.simulator import StudentConfig, simulate
from jaxpapers.mooc.world import WorldConfig, make_world


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--students", type=int, default=100_000)
  ap.add_argument("--chunk", type=int, default=16384)
  args = ap.parse_args()
  world = make_world(WorldConfig(), 0)
  s = StudentConfig()
  t0 = time.perf_counter()
  simulate(world, s, args.chunk, 0, chunk=args.chunk)        # compiles the chunk's program
  first = time.perf_counter() - t0
  t0 = time.perf_counter()
  trace = simulate(world, s, args.students, 1, chunk=args.chunk)
  seconds = time.perf_counter() - t0
  print(json.dumps(dict(students=args.students, steps=s.steps, seconds=round(seconds, 2),
                        students_per_s=round(args.students / seconds),
                        first_call_with_compile_s=round(first, 2), chunk=args.chunk,
                        active_steps=int(trace["active"].sum()),
                        devices=jax.device_count())))


if __name__ == "__main__":
  main()
