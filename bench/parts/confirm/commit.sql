-- The end of a confirm's parts (scripts/bench-parts.sh `... confirm`).
commit;
