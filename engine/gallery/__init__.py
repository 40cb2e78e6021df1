"""The gallery: every result image of every job, with what made it, as a PNG on disk and a row in SQLite.

record.py   the job hook (Recorder.on_job_complete): PNG + thumbnail + row for each result layer
png.py      PNG metadata (iTXt `paintbridge`), WebP thumbnails, reading the metadata back (images.import)
trace.py    what made an image: generation facts of a graph output, the generate arguments of one layer
hashing.py  the model hash stored with an image
db.py       the SQL behind images.* and boards.*

The metadata's `params` is exactly what `generate` takes, so a client refills its form from it, `generate`
with `recall: ID` reproduces the image (engine/ops/generate.py merges the recalled params), and `images.import`
turns a dropped-in PNG back into params.
"""
