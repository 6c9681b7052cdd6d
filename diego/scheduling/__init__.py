"""Placement and repair: the auction and the converger, each a pure plan and its loop."""
