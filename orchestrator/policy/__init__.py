"""The admission policy and what feeds it: the rules, the queue plan, the build history."""
