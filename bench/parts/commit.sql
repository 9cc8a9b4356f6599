-- The end of a part made of increments (scripts/bench-parts.sh).
commit;
