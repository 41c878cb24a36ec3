"""Apply: carry out a plan's actions on the host, in order, stopping at the first failure."""
