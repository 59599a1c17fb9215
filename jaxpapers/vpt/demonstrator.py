"""The scripted demonstrators that stand in for VPT's contractors (§2.1: many humans playing
Minecraft, each in their own way): policies over Craftax's symbolic state. Every episode draws a
style and its own thresholds (`initial_carry`), so the video mixes behaviours:

- `builder`: tools first (wood, stone, then iron at a furnace, mining the coal and iron they
  need), then diamonds;
- `farmer`: collects saplings, plants them and eats the ripe plants, keeps fed on cows, makes
  the wooden and stone tools;
- `explorer`: twice the random moves, makes the wooden tools, drinks and eats later.

All of them keep alive as a player does: fight an adjacent zombie or skeleton (and, about to
sleep, a zombie that can reach them within 2 cells), drink when thirst passes the episode's
threshold (and, beside the water, drink up unless sealed in), eat (cow or ripe plant) when food
does, and sleep at night or when energy runs low, in a two-cell pocket dug into stone and sealed
behind them (`_shelter_site`), staying in it until it is light and digging out then; hurt (health
below the episode's `hide_below`) and holding a pickaxe, they shelter the same way and stay until
healed to 8; with no pocket in reach they sleep in the open (behind one stone if they carry one)
by day, or at night once energy is spent; no-ops while asleep or waiting in a pocket rested (the
game ignores every key, and SLEEP at full energy, then). Water, food, pocket sites and the block
being collected are found over the whole map by distance fields kept in the carry
(`update_fields`; the goal's field restarts when the goal changes), through stone once they hold
a pickaxe. In the study of experiments/vpt/README.md ("Demonstrators", 64 worlds) 44 episodes
last 1,000 steps. Random moves and no-ops at the style's rates keep the behaviour's entropy. A
demonstrator sees the whole map (the agents learning from its video see only the 9x7-tile
view)."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

# Craftax-Classic block ids and actions (craftax.craftax_classic.constants)
GRASS, WATER, STONE, TREE, PATH, COAL, IRON, DIAMOND = 2, 3, 4, 5, 7, 8, 9, 10
TABLE, FURNACE, SAND, LAVA, RIPE_PLANT = 11, 12, 13, 14, 16
SOLID = jnp.array([3, 4, 5, 8, 9, 10, 11, 12, 15, 16])
NOOP, LEFT, RIGHT, UP, DOWN, DO, SLEEP = 0, 1, 2, 3, 4, 5, 6
PLACE_STONE, PLACE_TABLE, PLACE_FURNACE, PLACE_PLANT = 7, 8, 9, 10
MAKE_WOOD_PICKAXE, MAKE_STONE_PICKAXE, MAKE_IRON_PICKAXE = 11, 12, 13
MAKE_WOOD_SWORD, MAKE_STONE_SWORD, MAKE_IRON_SWORD = 14, 15, 16
MOVES = jnp.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]])   # indexed by action 0..4
PLACE_STONE_ACH, PLACE_PLANT_ACH = 10, 7      # achievement ids
STYLES = ("builder", "farmer", "explorer")
INTENTS = ("fight", "leave_pocket", "drink", "eat", "sleep", "to_stone", "craft", "place", "collect",
           "farm", "explore", "whim", "asleep")
FAR = 10 ** 6


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  random_move: float = 0.08     # probability of a uniformly random move instead of the plan
  noop: float = 0.04            # probability of a no-op
  table_range: int = 6          # a table farther than this (Manhattan) is "not nearby": place one
  styles: tuple[float, ...] = (0.4, 0.3, 0.3)   # the probability of each of STYLES per episode


MAP = 64           # Craftax-Classic's map is 64 x 64
FIELDS = ("water", "food", "shelter", "goal")   # the distance fields a demonstrator keeps
RELAX = 4          # relaxation sweeps of each field per step


def initial_carry(cfg: DemoConfig, num_envs: int, key) -> dict:
  """Each episode's style and needs thresholds (drink / eat below, sleep below), drawn once, and
  its distance fields (unknown at first: FAR)."""
  ks, kd, kf, ke, kh = jax.random.split(key, 5)
  style = jax.random.choice(ks, len(STYLES), (num_envs,), p=jnp.asarray(cfg.styles))
  explorer = style == STYLES.index("explorer")
  far = jnp.full((num_envs, MAP, MAP), FAR, jnp.int32)
  return {"style": style.astype(jnp.int32),
          "drink_below": jax.random.randint(kd, (num_envs,), 4, 7) - 2 * explorer,
          "food_below": jax.random.randint(kf, (num_envs,), 4, 7) - 2 * explorer,
          "sleep_below": jax.random.randint(ke, (num_envs,), 2, 4),
          "hide_below": jax.random.randint(kh, (num_envs,), 7, 9),
          "goal": jnp.zeros((num_envs,), jnp.int32),
          **{f"{f}_dist": far for f in FIELDS}}


def _open_cells(blocks):
  """Walkable cells of a block of the map: not solid, not lava, not outside it (ids 0 and 1)."""
  return ~jnp.isin(blocks, SOLID) & (blocks != LAVA) & (blocks > 1)


def _passable(state):
  """[H, W]: cells a path may cross: walkable ones, and stone once the player can dig it."""
  m = state.map
  return _open_cells(m) | ((m == STONE) & (state.inventory.wood_pickaxe > 0))


def _mob_cells(mobs, shape):
  return jnp.zeros(shape, bool).at[mobs.position[:, 0], mobs.position[:, 1]].max(mobs.mask)


def update_fields(episode: dict, state) -> dict:
  """Relax the episode's distance fields RELAX times (Bellman-Ford sweeps without memory of the
  old minimum, so a path that closes is forgotten as fast as a new one is learnt): the number of
  actions from each cell to the nearest water (`water`) or cow or ripe plant (`food`), moving
  through passable cells (`_passable`; a stone costs two: dig, step); 0 on the target itself. The whole map is planned over,
  not only the 10 cells `_path_step` sees, at the cost of a few steps of lag at the start.
  `shelter`: to the nearest cell a sealed pocket can be dug from (`_shelter_site`); `goal`: to
  the nearest block of the kind the last step walked to (`decide`'s goal; `make_demonstrator`
  resets it to FAR when the goal changes, so the lag returns after each change)."""
  passable = _passable(state)
  cost = jnp.where(state.map == STONE, 2, 1)            # a stone is dug, then stepped into
  sources = {"water": state.map == WATER,
             "food": (state.map == RIPE_PLANT) | _mob_cells(state.cows, state.map.shape),
             "shelter": _shelter_entrances(*_padded_map(state.map)),
             "goal": (state.map == episode["goal"]) & (episode["goal"] > 0)}

  def relax(d, src):
    p = jnp.pad(d, 1, constant_values=FAR)
    near = jnp.minimum(jnp.minimum(p[:-2, 1:-1], p[2:, 1:-1]), jnp.minimum(p[1:-1, :-2], p[1:-1, 2:]))
    return jnp.where(src, 0, jnp.where(passable, jnp.minimum(near + cost, FAR), FAR))

  out = dict(episode)
  for f in FIELDS:
    d = episode[f"{f}_dist"]
    for _ in range(RELAX):
      d = relax(d, sources[f])
    out[f"{f}_dist"] = d
  return out


def _descend(field, m, pos, facing, onto=False):
  """The action along a distance field from `pos`: step to the neighbour nearest the target
  (digging a stone in the way: face it, then DO), and once adjacent face the target and DO (or
  step onto it: `onto`); and whether the field knows a way (the neighbours are not all FAR)."""
  dirs = jnp.arange(LEFT, DOWN + 1)
  near = jax.vmap(lambda d: _at(field, pos + MOVES[d], FAR))(dirs)
  d = dirs[jnp.argmin(2 * near + (dirs != facing))]         # ties: the way it faces
  ahead = _at(m, pos + MOVES[d], 0)
  act = jnp.where((((near.min() == 0) & (not onto)) | (ahead == STONE)) & (facing == d), DO, d)
  return act, near.min() < FAR // 2


def _nearest(mask, pos):
  """(position, Manhattan distance) of the nearest True cell of mask [H, W] (FAR if none)."""
  h, w = mask.shape
  rr, cc = jnp.meshgrid(jnp.arange(h), jnp.arange(w), indexing="ij")
  d = jnp.where(mask, jnp.abs(rr - pos[0]) + jnp.abs(cc - pos[1]), FAR)
  i = jnp.argmin(d)
  return jnp.stack([i // w, i % w]), d.reshape(-1)[i]


def _nearest_mob(mobs, pos):
  d = jnp.where(mobs.mask, jnp.abs(mobs.position - pos).sum(-1), FAR)
  i = jnp.argmin(d)
  return mobs.position[i], d[i]


def _walkable(m, cell):
  h, w = m.shape
  inside = (cell[0] >= 0) & (cell[0] < h) & (cell[1] >= 0) & (cell[1] < w)
  b = m[jnp.clip(cell[0], 0, h - 1), jnp.clip(cell[1], 0, w - 1)]
  return inside & ~jnp.isin(b, SOLID) & (b != LAVA)


def _open_between(m, pos, target):
  """Whether a mob at Manhattan distance 2 can step next to the player: the cell between them
  (in line) or one of the two corner cells (diagonal) is walkable; not through a wall."""
  delta = target - pos
  diagonal = (delta[0] != 0) & (delta[1] != 0)
  corners = _walkable(m, pos + jnp.stack([delta[0], 0])) | _walkable(m, pos + jnp.stack([0, delta[1]]))
  return jnp.where(diagonal, corners, _walkable(m, pos + delta // 2))


def _toward(m, pos, facing, target, dist, key):
  """The move/turn/DO that brings the player to act on `target` (a solid block or a mob)."""
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


def _at(m, cell, fill):
  """m[cell], or `fill` outside the map."""
  h, w = m.shape
  inside = (cell[0] >= 0) & (cell[0] < h) & (cell[1] >= 0) & (cell[1] < w)
  return jnp.where(inside, m[jnp.clip(cell[0], 0, h - 1), jnp.clip(cell[1], 0, w - 1)], fill)


def _solid(m, cell):
  return ~_walkable(m, cell)


def _shelter_site(m, entrance, d):
  """A shelter can be dug from walkable `entrance` in direction d (a MOVES index 1..4): the two
  cells ahead are stone (or already dug), everything around them solid. Dug in, stepped back one
  cell and the entrance sealed with a stone, the player is in a closed two-cell pocket that no
  zombie can reach (they spawn 10+ cells away and walk). In Craftax a player can only face an
  open cell by moving into it, which is why the pocket has two cells."""
  ahead, side = MOVES[d], MOVES[jnp.where(d <= RIGHT, UP, LEFT)]
  dug = lambda c: jnp.isin(_at(m, c, 0), jnp.array([STONE, PATH]))
  s1, s2 = entrance + ahead, entrance + 2 * ahead
  return (_walkable(m, entrance) & dug(s1) & dug(s2) & _solid(m, entrance + 3 * ahead)
          & _solid(m, s1 + side) & _solid(m, s1 - side) & _solid(m, s2 + side) & _solid(m, s2 - side))


VIEW = 10         # how far (cells, each way) the demonstrator plans paths around itself
_PAD = VIEW + 3   # a shelter site needs three cells beyond its entrance


def _local(m, pos):
  """The (2 VIEW + 7)^2 block of the map around the player (outside the map: OUT_OF_BOUNDS),
  with the walkable cells: (blocks, walkable)."""
  size = 2 * _PAD + 1
  padded = jnp.pad(m, _PAD, constant_values=1)              # 1: Craftax's OUT_OF_BOUNDS
  blocks = jax.lax.dynamic_slice(padded, (pos[0], pos[1]), (size, size))
  return blocks, _open_cells(blocks)


def _shift(a, dy, dx):
  """a[y + dy, x + dx] over the centre of a block padded by 3 cells (a local block's
  (2 VIEW + 1)^2 centre, or the whole map in `_padded_map`)."""
  n, k = a.shape[0] - 6, a.shape[1] - 6
  return a[3 + dy:3 + dy + n, 3 + dx:3 + dx + k]


def _padded_map(m):
  """The whole map padded by 3 cells of OUT_OF_BOUNDS, with its walkable cells, as `_local`."""
  blocks = jnp.pad(m, 3, constant_values=1)
  return blocks, _open_cells(blocks)


def _path_step(walk, sources):
  """The move (LEFT..DOWN) from the centre along a shortest walkable path to the nearest source
  cell of the (2 VIEW + 1)^2 centre, and whether one is reachable within the view (breadth-first
  distances by repeated relaxation)."""
  n = 2 * VIEW + 1
  inner = _shift(walk, 0, 0)
  dist = jnp.where(sources & inner, 0, FAR)

  def relax(_, d):
    p = jnp.pad(d, 1, constant_values=FAR)
    near = jnp.minimum(jnp.minimum(p[:-2, 1:-1], p[2:, 1:-1]), jnp.minimum(p[1:-1, :-2], p[1:-1, 2:]))
    return jnp.where(inner, jnp.minimum(d, near + 1), FAR)

  dist = jax.lax.fori_loop(0, 2 * VIEW, relax, dist)
  p = jnp.pad(dist, 1, constant_values=FAR)
  c = VIEW + 1
  options = jnp.array([p[c, c - 1], p[c, c + 1], p[c - 1, c], p[c + 1, c]])   # LEFT RIGHT UP DOWN
  return LEFT + jnp.argmin(options), options.min() < FAR


def _shelter_entrances(blocks, walk):
  """The walkable cells of a block's centre (see _shift) from which a shelter (_shelter_site) can
  be dug."""
  dug = jnp.isin(blocks, jnp.array([STONE, PATH]))
  solid = ~walk
  out = jnp.zeros((blocks.shape[0] - 6, blocks.shape[1] - 6), bool)
  for (dy, dx), (ly, lx) in (((0, -1), (1, 0)), ((0, 1), (1, 0)), ((-1, 0), (0, 1)), ((1, 0), (0, 1))):
    at = lambda a, k, l=0: _shift(a, k * dy + l * ly, k * dx + l * lx)
    out |= (at(walk, 0) & at(dug, 1) & at(dug, 2) & at(solid, 3) & at(solid, 1, 1) & at(solid, 1, -1)
            & at(solid, 2, 1) & at(solid, 2, -1))
  return out


def _sleep_plan(m, pos, facing, inv, blocks, walk, shelter_dist):
  """The action towards sleeping in a sealed pocket (see _shelter_site): (action, sealed, whether
  a pocket is in reach: otherwise the action sleeps in the open, behind a stone if it has one)."""
  dirs = jnp.arange(1, 5)
  opens = jax.vmap(lambda d: _walkable(m, pos + MOVES[d]))(dirs)                  # [4]
  # sealed: no open neighbour, or one whose own other neighbours are all closed
  x = pos + MOVES[dirs[jnp.argmax(opens)]]
  x_opens = jax.vmap(lambda d: _walkable(m, x + MOVES[d]) & ~jnp.all(x + MOVES[d] == pos))(dirs)
  sealed = (opens.sum() == 0) | ((opens.sum() == 1) & ~x_opens.any())
  at_s1 = jax.vmap(lambda d: _shelter_site(m, pos - MOVES[d], d))(dirs)
  at_s2 = jax.vmap(lambda d: _shelter_site(m, pos - 2 * MOVES[d], d))(dirs)
  at_e = jax.vmap(lambda d: _shelter_site(m, pos, d))(dirs)
  d1, d2, de = (dirs[jnp.argmax(a)] for a in (at_s1, at_s2, at_e))
  back = jnp.array([0, RIGHT, LEFT, DOWN, UP])                                     # the opposite move
  entrance_open = _walkable(m, pos - MOVES[d1])
  s2_stone = _at(m, pos + MOVES[d1], 0) == STONE
  in_s1 = jnp.where((facing == back[d1]) & entrance_open,
                    jnp.where(inv.stone >= 1, PLACE_STONE, SLEEP),     # no stone to seal: sleep
                    jnp.where((facing == d1) & s2_stone, DO, d1))
  s1_stone = _at(m, pos + MOVES[de], 0) == STONE
  at_entrance = jnp.where((facing == de) & s1_stone, DO, de)
  walk_to_site, site_reachable = _path_step(walk, _shelter_entrances(blocks, walk))
  to_far_site, far_site = _descend(shelter_dist, m, pos, facing, onto=True)
  pickaxe = inv.wood_pickaxe > 0
  action = jnp.select(
      [sealed, at_s2.any(), pickaxe & at_s1.any(), pickaxe & at_e.any(), pickaxe & site_reachable,
       pickaxe & far_site, (inv.stone >= 1) & _walkable(m, pos + MOVES[jnp.clip(facing, 1, 4)])],
      [SLEEP, back[d2], in_s1, at_entrance, walk_to_site, to_far_site, PLACE_STONE], SLEEP)
  sheltering = sealed | at_s2.any() | (pickaxe & (at_s1.any() | at_e.any() | site_reachable | far_site))
  return action, sealed, sheltering


def decide(cfg: DemoConfig, episode: dict, state, key):
  """(action, intent, goal): the demonstrator's action for one Craftax-Classic state, what it was
  doing (an index into INTENTS) and the block it walks to (0: none; the next step's `goal`
  field plans for it); `episode`: one row of initial_carry (style, thresholds, fields)."""
  m, pos, facing, inv = state.map, state.player_position, state.player_direction, state.inventory
  k_nav, k_rand, k_move = jax.random.split(key, 3)
  style = episode["style"]
  builder, farmer, explorer = (style == STYLES.index(s) for s in STYLES)
  front = pos + MOVES[jnp.clip(facing, 0, 4)]
  front_block = m[jnp.clip(front[0], 0, m.shape[0] - 1), jnp.clip(front[1], 0, m.shape[1] - 1)]
  free_front = jnp.isin(front_block, jnp.array([GRASS, SAND, PATH]))
  ok = jax.vmap(lambda d: _walkable(m, pos + MOVES[d]))(jnp.arange(LEFT, DOWN + 1))
  wander = LEFT + jax.random.choice(k_move, 4, p=jnp.where(ok.any(), ok / jnp.maximum(ok.sum(), 1), 0.25))

  goal_step, goal_known = _descend(episode["goal_dist"], m, pos, facing)

  def go(block):
    """Towards the nearest `block`: along the goal field if it was planned for this block (the
    goal of the last step), else straight at it (`_toward`)."""
    at, d = _nearest(m == block, pos)
    planned = goal_known & (episode["goal"] == block)
    return jnp.where(planned, goal_step, _toward(m, pos, facing, at, d, k_nav)), d

  table_at, table_d = _nearest(m == TABLE, pos)
  near_table = jnp.max(jnp.abs(table_at - pos)) <= 1          # Craftax's 8-neighbourhood
  furnace_at, _ = _nearest(m == FURNACE, pos)
  near_furnace = jnp.max(jnp.abs(furnace_at - pos)) <= 1
  need_table = table_d > cfg.table_range
  go_table = _toward(m, pos, facing, table_at, table_d, k_nav)
  go_tree, _ = go(TREE)
  go_stone, stone_d = go(STONE)
  go_water, water_d = go(WATER)
  blocks, walk = _local(m, pos)
  water = blocks == WATER
  by_water = _shift(walk, 0, 0) & (_shift(water, 0, 1) | _shift(water, 0, -1) | _shift(water, 1, 0)
                                   | _shift(water, -1, 0))
  water_path, water_near = _path_step(walk, by_water)
  go_water = jnp.where((water_d > 1) & water_near, water_path, go_water)
  water_field, water_known = _descend(episode["water_dist"], m, pos, facing)
  go_water = jnp.where(water_known, water_field, go_water)
  food_field, food_known = _descend(episode["food_dist"], m, pos, facing)
  go_coal, coal_d = go(COAL)
  go_iron, iron_d = go(IRON)
  go_diamond, diamond_d = go(DIAMOND)
  go_ripe, ripe_d = go(RIPE_PLANT)
  zombie_at, zombie_d = _nearest_mob(state.zombies, pos)
  skeleton_at, skeleton_d = _nearest_mob(state.skeletons, pos)
  cow_at, cow_d = _nearest_mob(state.cows, pos)

  # what this style still wants to make (iron tools: builders only)
  iron_tools = builder & (inv.stone_pickaxe > 0)
  want_stone_tools = ~explorer
  c_wp = near_table & (inv.wood >= 1) & (inv.wood_pickaxe == 0)
  c_ws = near_table & (inv.wood >= 1) & (inv.wood_sword == 0)
  c_sp = want_stone_tools & near_table & (inv.wood >= 1) & (inv.stone >= 1) & (inv.stone_pickaxe == 0)
  c_ss = want_stone_tools & near_table & (inv.wood >= 1) & (inv.stone >= 1) & (inv.stone_sword == 0)
  has_iron_kit = (inv.wood >= 1) & (inv.stone >= 1) & (inv.coal >= 1) & (inv.iron >= 1)
  c_ip = iron_tools & near_table & near_furnace & has_iron_kit & (inv.iron_pickaxe == 0)
  c_is = iron_tools & near_table & near_furnace & has_iron_kit & (inv.iron_sword == 0)
  need_furnace = iron_tools & near_table & ~near_furnace & (inv.stone >= 2)
  want_wood = (2 * need_table + (inv.wood_pickaxe == 0) + (inv.wood_sword == 0)
               + want_stone_tools * ((inv.stone_pickaxe == 0) + (inv.stone_sword == 0))
               + iron_tools * ((inv.iron_pickaxe == 0) + (inv.iron_sword == 0)))
  want_stone = (inv.wood_pickaxe > 0) & (inv.stone < 1 + want_stone_tools * (
      (inv.stone_pickaxe == 0) + (inv.stone_sword == 0)) + ~state.achievements[PLACE_STONE_ACH]
      + iron_tools * (2 + (inv.iron_pickaxe == 0) + (inv.iron_sword == 0)))
  want_coal = iron_tools & (inv.coal < (inv.iron_pickaxe == 0) + (inv.iron_sword == 0)) & (coal_d < FAR)
  want_iron = iron_tools & (inv.iron < (inv.iron_pickaxe == 0) + (inv.iron_sword == 0)) & (iron_d < FAR)
  want_diamond = builder & (inv.iron_pickaxe > 0) & (diamond_d < FAR)
  can_place_table = need_table & (inv.wood >= 2) & (inv.wood >= jnp.minimum(want_wood, 9))
  place_stone = (inv.stone >= 1) & ~state.achievements[PLACE_STONE_ACH]
  to_table = (inv.wood >= 1) & (c_wp | c_ws | c_sp | c_ss | (inv.wood_pickaxe == 0) | (inv.wood_sword == 0)
                                | (want_stone_tools & (inv.stone >= 1) & ((inv.stone_pickaxe == 0) | (inv.stone_sword == 0)))
                                | (iron_tools & has_iron_kit & ((inv.iron_pickaxe == 0) | (inv.iron_sword == 0))))
  thirsty = state.player_drink < episode["drink_below"]
  thirsty = thirsty | ((water_d == 1) & (state.player_drink < 9))   # at the water: drink up
  hungry = state.player_food < episode["food_below"]
  tired = state.player_energy < episode["sleep_below"]
  farm = farmer & (inv.sapling == 0) & ~state.achievements[PLACE_PLANT_ACH]
  plant = farmer & (inv.sapling > 0)

  sleep_action, sealed, sheltering = _sleep_plan(m, pos, facing, inv, blocks, walk, episode["shelter_dist"])
  # rested (energy 9) the game ignores SLEEP: a player waits instead
  sleep_action = jnp.where((sleep_action == SLEEP) & (state.player_energy >= 9), NOOP, sleep_action)
  # no pocket in reach: sleep in the open only by day (zombies spawn mostly at night), or spent
  tired = tired & (sheltering | (state.light_level > 0.5) | (state.player_energy == 0))
  # night falls: into a pocket and to sleep, as a Crafter player does, and stay till it is light
  night = state.light_level < 0.35
  tired = tired | (night & sheltering & (state.player_energy < 9))
  # hurt: into a pocket to heal, safe from zombies (asleep if tired), and stay till nearly healed
  hurt = ((state.player_health < episode["hide_below"]) | (sealed & (state.player_health < 8))) & sheltering
  tired = tired | hurt
  # dusk (the light falls from 0.6) and no pocket anywhere (the shelter field reaches the whole
  # map, so this is rare): walk to stone, where pockets can be dug
  dusk = (state.light_level < 0.6) & ~night & ~sheltering & (inv.wood_pickaxe > 0) & (stone_d < FAR)
  dig_out = jnp.where(night, NOOP, jnp.where(front_block == STONE, DO, wander))
  branches = (   # (intent, condition, action[, the block it walks to]): the first that holds is the plan
      ("fight", zombie_d == 1, _toward(m, pos, facing, zombie_at, zombie_d, k_nav)),
      ("fight", skeleton_d == 1, _toward(m, pos, facing, skeleton_at, skeleton_d, k_nav)),
      ("leave_pocket", sealed & ~tired & (~night | (state.player_drink <= 2) | (state.player_food <= 2)),
       jnp.where(front_block == STONE, DO, wander)),
      ("drink", thirsty & (~tired | (state.player_drink <= 2) | ((water_d == 1) & ~sealed)), go_water),
      ("eat", hungry & food_known & (~tired | (state.player_food <= 2)), food_field),
      ("eat", hungry & (cow_d < 12) & (~tired | (state.player_food <= 2)),
       _toward(m, pos, facing, cow_at, cow_d, k_nav)),
      ("eat", hungry & (ripe_d < 12) & (~tired | (state.player_food <= 2)), go_ripe),
      ("fight", tired & ~sealed & (zombie_d <= 2) & _open_between(m, pos, zombie_at),
       _toward(m, pos, facing, zombie_at, zombie_d, k_nav)),
      ("sleep", tired, sleep_action),
      ("sleep", sealed, dig_out),
      ("to_stone", dusk, go_stone, STONE),
      ("craft", c_wp, MAKE_WOOD_PICKAXE), ("craft", c_ws, MAKE_WOOD_SWORD),
      ("craft", c_sp, MAKE_STONE_PICKAXE), ("craft", c_ss, MAKE_STONE_SWORD),
      ("craft", c_ip, MAKE_IRON_PICKAXE), ("craft", c_is, MAKE_IRON_SWORD),
      ("place", need_furnace & free_front, PLACE_FURNACE), ("place", need_furnace, wander),
      ("place", can_place_table & free_front, PLACE_TABLE), ("place", can_place_table, wander),
      ("collect", inv.wood < jnp.minimum(want_wood, 9), go_tree, TREE),
      ("collect", want_stone & (stone_d < FAR), go_stone, STONE),
      ("place", place_stone & (free_front | (front_block == WATER)), PLACE_STONE),
      ("place", place_stone, wander),
      ("craft", to_table & ~need_table, go_table),
      ("collect", want_coal, go_coal, COAL), ("collect", want_iron, go_iron, IRON),
      ("collect", want_diamond, go_diamond, DIAMOND),
      ("farm", plant & (front_block == GRASS), PLACE_PLANT), ("farm", plant, wander),
      ("farm", farm & (front_block == GRASS), DO), ("farm", farm, wander),
      ("farm", farmer & (ripe_d < 20), go_ripe),
      ("explore", explorer, wander),
      ("collect", True, go_tree, TREE))
  rows = [b if len(b) == 4 else (*b, 0) for b in branches]
  branch = jnp.argmax(jnp.array([jnp.asarray(c) for _, c, _, _ in rows]))   # the first true one
  plan = jnp.array([a for _, _, a, _ in rows])[branch]
  intent = jnp.array([INTENTS.index(n) for n, _, _, _ in rows])[branch]
  goal = jnp.array([g for _, _, _, g in rows])[branch]
  # no whims in a fight or on the way to bed
  focused = (zombie_d <= 2) | (skeleton_d <= 2) | tired | sealed
  u = jnp.where(focused, 1.0, jax.random.uniform(k_rand))
  random_move = cfg.random_move * (1 + explorer)
  whim = u < cfg.noop + random_move
  a = jnp.where(u < cfg.noop, NOOP, jnp.where(whim, wander, plan))
  intent = jnp.where(state.is_sleeping, INTENTS.index("asleep"), jnp.where(whim, INTENTS.index("whim"), intent))
  return jnp.where(state.is_sleeping, NOOP, a).astype(jnp.int32), intent, goal


def act_one(cfg: DemoConfig, episode: dict, state, key):
  """The demonstrator's action for one Craftax-Classic state; `episode`: one row of
  initial_carry (its style and thresholds)."""
  return decide(cfg, episode, state, key)[0]


def make_demonstrator(cfg: DemoConfig = DemoConfig()):
  """An `env.ActFn` acting for a batch of Craftax states; its carry is `initial_carry(cfg, N,
  key)` (each episode's style and thresholds)."""
  def act(carry, frame, state, key):
    keys = jax.random.split(key, frame.shape[0])
    carry = jax.vmap(update_fields)(carry, state)
    action, _, goal = jax.vmap(lambda e, s, k: decide(cfg, e, s, k))(carry, state, keys)
    fresh = (goal != carry["goal"])[:, None, None]           # a new goal: plan it from scratch
    return action, {**carry, "goal": goal, "goal_dist": jnp.where(fresh, FAR, carry["goal_dist"])}
  return act
