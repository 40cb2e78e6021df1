"""Every wire op, one async handler each, in the module named after its prefix: op `X.y` (or a bare `X`) is
handled in engine/ops/X.py. Importing this package registers them all in engine.opspec.OPS.

hello.py      hello                      auth.py       auth.login|refresh|whoami
ping.py       ping                       users.py      users.list|create|passwd|disable|admin|sign_out
blob.py       blob.has|put|get           blobs.py      blobs.gc
generate.py   generate                   graph.py      graph.submit
job.py        job.get|cancel|list        nodes.py      nodes.list
models.py     models.list|unload|scan|install|remove
images.py     images.list|get|delete|star|move|import
boards.py     boards.create|list|rename|delete
workflows.py  workflows.save|list|get|delete|run
pool.py       pool.status
"""

from ..opspec import OPS  # noqa: F401
from . import (auth, blob, blobs, boards, generate, graph, hello, images, job, models, nodes,  # noqa: F401
               ping, pool, users, workflows)
