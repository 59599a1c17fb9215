"""Paper-agnostic machinery: configs, mesh + sharding rules, train loop, checkpoints, reports."""
