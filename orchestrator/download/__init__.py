"""The download stage: requirements files read, sdists fetched from an index, hash-checked and cached.

Modules: ``requirements`` (pip-style lock files), ``index`` (finding a file through unearth),
``cache`` (the content-addressed cache), ``fetch`` (streaming, hashes, retries, and
:func:`download_all`), ``results`` (what the stage reports).

Nothing is imported here: ``fetch`` and ``index`` import httpx and unearth, which only a run that
downloads needs (a build of local sdists, ``--help`` and ``report`` do not).
"""
