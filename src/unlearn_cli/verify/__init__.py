"""`unlearn verify` as a library: budget and integrity of written files, learnability by fresh
attackers, countermeasures, report pictures."""
