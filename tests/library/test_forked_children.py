"""The suite's forked children (tests/forked.py) share nothing with the test process that could stop it."""

import threading

from forked import Forked
from tqdm import tqdm


def test_a_child_killed_while_holding_the_write_lock_leaves_the_parent_writing():
    tqdm.write("the test process's write lock exists before the fork")
    source = "import time\nfrom tqdm import tqdm\ntqdm.get_lock().acquire()\nprint('held')\ntime.sleep(60)"
    child = Forked(source, [])
    child.wait_until_printed("held")
    child.kill()
    child.wait()
    written = threading.Event()
    threading.Thread(target=lambda: (tqdm.write("after the kill"), written.set()), daemon=True).start()
    assert written.wait(10), "the test process's tqdm.write waits for a lock its killed child held"
