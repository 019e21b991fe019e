"""The download stage: requirements files read, sdists fetched from an index, hash-checked and cached."""
