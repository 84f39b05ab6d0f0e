"""Child process for the crash test: saves scribbles and masks in a loop and acknowledges each save.

Prints ``ACK <kind> <image_id> <version-or-mask-id> <seed>`` after a save has returned (flushed), so
the parent knows which saves were acknowledged before it sent SIGKILL.
"""
import sys

import numpy as np

from annotations.store import Project


def payload(seed: int, shape) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([0, 1, 2, 255], np.uint8), size=shape)


def main(root: str, start_seed: int) -> None:
    p = Project.open(root)
    ids = p.image_ids()
    info = p.image_info(ids[0])
    shape = (info.height, info.width)
    seed = start_seed
    out = sys.stdout
    while True:
        i = ids[seed % len(ids)]
        arr = payload(seed, shape)
        if seed % 3 == 2:
            m = p.save_mask(i, arr, "predicted", source=f"seed{seed}")
            out.write(f"ACK mask {i} {m.id} {seed}\n")
        else:
            v = p.save_scribbles(i, arr, expected_version=p.scribble_version(i))
            out.write(f"ACK scribble {i} {v} {seed}\n")
        out.flush()
        seed += 1


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
