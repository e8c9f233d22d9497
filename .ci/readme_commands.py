"""Print a set-up command of README.md verbatim: the indented line after `<!-- ci: NAME -->`.

    python3 .ci/readme_commands.py main   # the install + main job command
    python3 .ci/readme_commands.py test   # the install + test command

CI runs exactly what the README tells a newcomer to type, so the two cannot drift apart.
"""

import sys
from pathlib import Path

name = sys.argv[1]
lines = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text().splitlines()
marker = f"<!-- ci: {name} -->"
start = lines.index(marker)  # ValueError (and a failed CI) when the marker is gone
command = next(line for line in lines[start + 1 :] if line.strip())
if not command.startswith("    "):
    sys.exit(f"README.md: the line after {marker} is not an indented command: {command!r}")
print(command.strip())
