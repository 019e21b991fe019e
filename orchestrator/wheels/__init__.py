"""Wheels and sets of wheels: read and check one wheel, and check that a set holds what its wheels require."""
