"""Files -> pixels: discovery (files.py), decoding on the CPU (decode.py) or the GPU (device.py),
bounded worker threads (workers.py), and the one loop that embeds files in batches (batches.py),
used by ingest, training and evaluation alike."""
