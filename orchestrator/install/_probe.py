"""Print, as one JSON object, where the interpreter running this installs files (see ``target.py``).

Run as ``python -I _probe.py`` by the target's own interpreter, which may be
another Python without ``orchestrator``: standard library only, valid Python 3.6.
``headers`` is computed as installer's own CLI does (sysconfig has no such
path: https://bugs.python.org/issue44445).
"""

import json
import sys
import sysconfig

if __name__ == "__main__":
    paths = sysconfig.get_paths()
    base = sysconfig.get_config_var("base")
    print(json.dumps({
        "python": sys.executable,
        "cache_tag": sys.implementation.cache_tag,
        "scheme": {
            "purelib": paths["purelib"],
            "platlib": paths["platlib"],
            "headers": sysconfig.get_path("include", vars={"installed_base": base}),
            "scripts": paths["scripts"],
            "data": paths["data"],
        },
    }))
