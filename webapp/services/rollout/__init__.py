"""The rollout package: stable hashing into buckets, allocation, the rollout state writer, schedules, groups."""
