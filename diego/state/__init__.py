"""The BBS: desired and actual state in SQL, changed only by lifecycle verbs."""
