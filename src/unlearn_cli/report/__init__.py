"""What a protected photo's budget is: measured from the written file against its original."""
