"""Rebuild the shipped sample clip from the DAVIS 2016 'blackswan' sequence in ../shared.

    python samples/make_sample.py [--shared ../shared]

Writes samples/blackswan.mp4 (H.264, 854x480, 24 fps, 50 frames) and samples/blackswan-mask.png (the
first-frame ground-truth mask). DAVIS data: CC BY 4.0, Perazzi et al., CVPR 2016.
"""

import argparse
import shutil
from fractions import Fraction
from pathlib import Path

import av

from vos.video import open_video

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=HERE.parents[1] / "shared")
    args = parser.parse_args()
    davis = args.shared / "data" / "davis16"
    with open_video(davis / "JPEGImages" / "480p" / "blackswan") as frames, \
            av.open(str(HERE / "blackswan.mp4"), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = frames.info.width, frames.info.height, "yuv420p"
        stream.options = {"crf": "26", "preset": "slow"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    shutil.copyfile(davis / "Annotations" / "480p" / "blackswan" / "00000.png", HERE / "blackswan-mask.png")


if __name__ == "__main__":
    main()
