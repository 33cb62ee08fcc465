"""Scores of decoded responses: the rule scorers (rules), read by PPO's rule reward."""
