"""Views of the client page or the caseload under callgrind, between two marks: see ``bench/instructions.sh``.

Seeds as ``bench/client_page.py`` does (50 sessions, 200 clients), signs in, views the page 5 times unmeasured, then
writes ``<flag>.ready`` and waits for ``<flag>.go``; views it ``n`` times; writes ``<flag>.done`` and waits for
``<flag>.end``. The shell script switches callgrind's instrumentation on and off at the marks.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import client_page


def wait_for(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.05)


def main() -> None:
    page, flag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as folder:
        app, client_id = client_page.build(f"sqlite:///{folder}/bench.db", 50, 200)
        staff = app.test_client()
        login = staff.get("/login").text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)
        staff.post("/login", data={"csrf_token": csrf, "username": "ann", "password": client_page.PASSWORD})
        url = f"/clients/{client_id}" if page == "client" else "/caseload"
        for _ in range(5):
            staff.get(url)
        Path(flag + ".ready").touch()
        wait_for(flag + ".go")
        for _ in range(count):
            assert staff.get(url).status_code == 200
        Path(flag + ".done").touch()
        wait_for(flag + ".end")


if __name__ == "__main__":
    main()
