"""Canaries of a served model: judge a candidate version against the baseline."""

from avgpool.canary.judge import Check, Evidence, Mirror, Policy, Verdict, judge

__all__ = ["Check", "Evidence", "Mirror", "Policy", "Verdict", "judge"]
