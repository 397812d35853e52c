"""Discover: RL exploration of a task's concept space."""
