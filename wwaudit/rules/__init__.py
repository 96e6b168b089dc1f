"""Judgement: the finding rules (WW000...), the policy that tunes them, phases and baselines."""
