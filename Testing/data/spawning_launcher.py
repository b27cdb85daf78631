"""Stands in for ``PythonSlicer``: runs the real interpreter as a child process, as Slicer's launcher does.

Slicer's ``PythonSlicer`` is the CTK application launcher (CTKAppLauncher v0.1.33,
``Base/ctkAppLauncher.cpp``, ``runProcess``): it starts the interpreter with QProcess (forwarded
output channels and, since Qt 5.2, forwarded standard input), installs no signal handler and
exits with the child's status. So SIGTERM stops the launcher only. This script does the same;
it writes the child's PID to ``$LAUNCHER_CHILD_PID_FILE`` so that a test can check it is gone.
"""

import os
import subprocess
import sys

child = subprocess.Popen([sys.executable, *sys.argv[1:]])  # inherits stdin, stdout and stderr
pid_file = os.environ.get("LAUNCHER_CHILD_PID_FILE")
if pid_file:
    with open(pid_file, "a", encoding="utf-8") as stream:
        stream.write(f"{child.pid}\n")
sys.exit(child.wait())
