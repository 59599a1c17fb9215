"""The scripted demonstrator that stands in for VPT's contractors (§2.1: humans playing
Minecraft): a policy over Craftax's symbolic state that fights adjacent zombies, collects wood,
places a crafting table, makes wooden and stone tools, collects and places stone, drinks water
and eats cows, with random moves and no-ops so that trajectories are diverse. It sees the whole map (the agents learning from its
video see only the 9x7-tile view)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# Craftax-Classic block ids and actions (craftax.craftax_classic.constants)
GRASS, WATER, STONE, TREE, PATH, TABLE, SAND, LAVA = 2, 3, 4, 5, 7, 11, 13, 14
SOLID = jnp.array([3, 4, 5, 8, 9, 10, 11, 12, 15, 16])
NOOP, LEFT, RIGHT, UP, DOWN, DO = 0, 1, 2, 3, 4, 5
PLACE_STONE, PLACE_TABLE = 7, 8
MAKE_WOOD_PICKAXE, MAKE_STONE_PICKAXE, MAKE_WOOD_SWORD, MAKE_STONE_SWORD = 11, 12, 14, 15
MOVES = jnp.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]])   # indexed by action 0..4
PLACE_STONE_ACH = 10


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  random_move: float = 0.1      # probability of a uniformly random move instead of the plan
  noop: float = 0.04            # probability of a no-op
  table_range: int = 6          # a table farther than this (Manhattan) is "not nearby": place one


def _nearest(mask, pos):
  """(position, Manhattan distance) of the nearest True cell of mask [H, W] (distance 10**6 if none)."""
  h, w = mask.shape
  rr, cc = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
  d = jnp.where(mask, jnp.abs(rr - pos[0]) + jnp.abs(cc - pos[1]), 10 ** 6)
  i = jnp.argmin(d)
  return jnp.stack([i // w, i % w]), d.reshape(-1)[i]


def _nearest_mob(mobs, pos):
  d = jnp.where(mobs.mask, jnp.abs(mobs.position - pos).sum(-1), 10 ** 6)
  i = jnp.argmin(d)
  return mobs.position[i], d[i]


def _walkable(m, cell):
  h, w = m.shape
  inside = (cell[0] >= 0) & (cell[0] < h) & (cell[1] >= 0) & (cell[1] < w)
  b = m[jnp.clip(cell[0], 0, h - 1), jnp.clip(cell[1], 0, w - 1)]
  return inside & ~jnp.isin(b, SOLID) & (b != LAVA)


def _toward(m, pos, facing, target, dist, key):
  """The move/turn/DO that brings the player to act on `target` (a solid block)."""
  delta = target - pos
  adjacent = dist == 1
  face = jnp.select([delta[1] < 0, delta[1] > 0, delta[0] < 0], [LEFT, RIGHT, UP], DOWN)
  at_target = jnp.where(facing == face, DO, face)
  vertical = jnp.where(delta[0] < 0, UP, DOWN)
  horizontal = jnp.where(delta[1] < 0, LEFT, RIGHT)
  first_v = jnp.abs(delta[0]) >= jnp.abs(delta[1])
  first = jnp.where(first_v, vertical, horizontal)
  second = jnp.where(first_v, horizontal, vertical)
  second_ok = jnp.where(first_v, delta[1] != 0, delta[0] != 0) & _walkable(m, pos + MOVES[second])
  rand = jax.random.randint(key, (), LEFT, DOWN + 1)
  step = jnp.where(_walkable(m, pos + MOVES[first]), first, jnp.where(second_ok, second, rand))
  return jnp.where(adjacent, at_target, step)


def act_one(cfg: DemoConfig, state, key):
  """The demonstrator's action for one Craftax-Classic state."""
  m, pos, facing, inv = state.map, state.player_position, state.player_direction, state.inventory
  k_nav, k_rand, k_move, k_place = jax.random.split(key, 4)
  front = pos + MOVES[jnp.clip(facing, 0, 4)]
  front_block = m[jnp.clip(front[0], 0, m.shape[0] - 1), jnp.clip(front[1], 0, m.shape[1] - 1)]
  table_at, table_d = _nearest(m == TABLE, pos)
  near_table = jnp.max(jnp.abs(table_at - pos)) <= 1          # Craftax's 8-neighbourhood
  need_table = table_d > cfg.table_range
  # crafting at a table
  c_wp = near_table & (inv.wood >= 1) & (inv.wood_pickaxe == 0)
  c_ws = near_table & (inv.wood >= 1) & (inv.wood_sword == 0)
  c_sp = near_table & (inv.wood >= 1) & (inv.stone >= 1) & (inv.stone_pickaxe == 0)
  c_ss = near_table & (inv.wood >= 1) & (inv.stone >= 1) & (inv.stone_sword == 0)
  want_wood = (2 * need_table + (inv.wood_pickaxe == 0) + (inv.wood_sword == 0)
               + (inv.stone_pickaxe == 0) + (inv.stone_sword == 0))
  want_stone = (inv.wood_pickaxe > 0) & (inv.stone < 1 + (inv.stone_pickaxe == 0) + (inv.stone_sword == 0)
                                        + ~state.achievements[PLACE_STONE_ACH])
  free_front = jnp.isin(front_block, jnp.array([GRASS, SAND, PATH]))
  can_place_table = need_table & (inv.wood >= 2) & (inv.wood >= jnp.minimum(want_wood, 9))
  place_stone = (inv.stone >= 1) & ~state.achievements[PLACE_STONE_ACH]
  to_table = (inv.wood >= 1) & ((inv.wood_pickaxe == 0) | (inv.wood_sword == 0)
                                | ((inv.stone >= 1) & ((inv.stone_pickaxe == 0) | (inv.stone_sword == 0))))
  wander = jax.random.randint(k_move, (), LEFT, DOWN + 1)

  tree_at, tree_d = _nearest(m == TREE, pos)
  stone_at, stone_d = _nearest(m == STONE, pos)
  water_at, water_d = _nearest(m == WATER, pos)
  go_tree = _toward(m, pos, facing, tree_at, tree_d, k_nav)
  go_stone = _toward(m, pos, facing, stone_at, stone_d, k_nav)
  go_water = _toward(m, pos, facing, water_at, water_d, k_nav)
  go_table = _toward(m, pos, facing, table_at, table_d, k_nav)
  zombie_at, zombie_d = _nearest_mob(state.zombies, pos)
  cow_at, cow_d = _nearest_mob(state.cows, pos)
  plan = jnp.select(
      [zombie_d == 1, c_wp, c_ws, c_sp, c_ss,
       can_place_table & free_front, can_place_table,
       inv.wood < jnp.minimum(want_wood, 9),
       want_stone & (stone_d < 10 ** 6),
       place_stone & (free_front | (front_block == WATER)), place_stone,
       to_table & ~need_table,
       state.player_drink < 7,
       (state.player_food < 7) & (cow_d < 12)],
      [_toward(m, pos, facing, zombie_at, zombie_d, k_nav), MAKE_WOOD_PICKAXE, MAKE_WOOD_SWORD, MAKE_STONE_PICKAXE, MAKE_STONE_SWORD,
       PLACE_TABLE, wander,
       go_tree,
       go_stone,
       PLACE_STONE, wander,
       go_table,
       go_water,
       _toward(m, pos, facing, cow_at, cow_d, k_nav)],
      go_tree)
  u = jax.random.uniform(k_rand)
  return jnp.where(u < cfg.noop, NOOP, jnp.where(u < cfg.noop + cfg.random_move, wander, plan)).astype(jnp.int32)


def make_demonstrator(cfg: DemoConfig = DemoConfig()):
  """An `env.ActFn` acting for a batch of Craftax states."""
  def act(carry, frame, state, key):
    keys = jax.random.split(key, frame.shape[0])
    return jax.vmap(lambda s, k: act_one(cfg, s, k))(state, keys), carry
  return act
