-- A classic consumer group's membership as its coordinator last stored it (members, their
-- subscriptions and assignments, the leader), so a new coordinator can serve the group as it
-- stood instead of making every member rejoin. `members` is an opaque snapshot the coordinator
-- writes and reads (NULL: none, or cleared); `members_generation` is the generation it is of,
-- and a snapshot never replaces one of a later generation.
ALTER TABLE group_leases ADD COLUMN members TEXT;
ALTER TABLE group_leases ADD COLUMN members_generation INTEGER NOT NULL DEFAULT -1;
