"""Build .dvc/plots/offline.html: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined, so
``dvc plots show`` and ``dvc plots diff`` render with no network. DVC's default page loads them from a CDN.

The versions are the ones dvc-render pins; the files come from the npm registry (``npm pack``). Rerun after
upgrading dvc-render:  python tools/build_offline_plots_template.py
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

PACKAGES = {
    "vega@5.20.2": "vega.min.js",
    "vega-lite@5.2.0": "vega-lite.min.js",
    "vega-embed@6.18.2": "vega-embed.min.js",
}
OUT = Path(__file__).resolve().parents[1] / ".dvc" / "plots" / "offline.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega (BSD-3-Clause), Vega-Lite (BSD-3-Clause), Vega-Embed (BSD-3-Clause), inlined for offline use;
         built by tools/build_offline_plots_template.py -->
{scripts}
    <style>
        table {{ padding: 10px; border-collapse: collapse; }}
        th, td {{ border: 1px solid #ccc; padding: 4px 8px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main() -> None:
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for package, script in PACKAGES.items():
            name = subprocess.run(["npm", "pack", "-q", package], cwd=tmp, check=True, capture_output=True, text=True)
            with tarfile.open(Path(tmp) / name.stdout.strip().splitlines()[-1]) as tar:
                code = tar.extractfile(f"package/build/{script}").read().decode()
            scripts.append(f"    <script>/* {package} */\n{code}\n    </script>")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(PAGE.format(scripts="\n".join(scripts)))
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
