"""Evaluation: the leaderboard of a sweep, the winners re-scored on the held-out split next to
baselines and floors, breakdowns, bootstrap statistics and the report."""
