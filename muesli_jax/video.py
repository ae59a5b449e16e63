"""Episode frames as a TensorBoard image strip or a video file.

`frame_strip` needs only numpy and pillow (which the `train` extra brings),
so a training run can log a picture of an episode at every evaluation
(tensorboardX's `add_video` would need moviepy). `write_video` needs the
`video` extra (`pip install 'muesli_jax[video]'`: imageio, with
imageio-ffmpeg for mp4).

Frames are RGB `uint8 [H, W, 3]`, all of one size, as
`muesli_jax.evaluation.Evaluator` records them.
"""

import math
import os
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

VIDEO_EXTENSIONS = (".mp4", ".gif")
INSTALL_HINT = "pip install 'muesli_jax[video]'"


def _check_frames(frames: Sequence[np.ndarray]) -> None:
  if not len(frames):
    raise ValueError("no frames to write")
  shape = np.shape(frames[0])
  if len(shape) != 3 or shape[-1] != 3:
    raise ValueError(f"frames must be RGB [H, W, 3], got {shape}")
  for frame in frames:
    if np.shape(frame) != shape or np.asarray(frame).dtype != np.uint8:
      raise ValueError(f"frames must all be uint8 {shape}, got "
                       f"{np.asarray(frame).dtype} {np.shape(frame)}")


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
  # Magnified frames keep hard pixel edges (MinAtar's 10x10 grid stays a
  # grid); reduced ones are averaged so that thin lines do not vanish.
  resample = (Image.Resampling.NEAREST if height >= frame.shape[0] else
              Image.Resampling.BOX)
  return np.asarray(Image.fromarray(frame).resize((width, height), resample))


def frame_strip(frames: Sequence[np.ndarray], num: int = 8,
                height: int = 96) -> np.ndarray:
  """`num` frames spread evenly over an episode, side by side.

  Args:
    frames: `[T]` RGB frames `uint8 [H, W, 3]` of one episode.
    num: frames in the strip; the first and the last are always in it (a
      frame repeats when the episode has fewer than `num`, so the strip's
      size does not depend on the episode's length).
    height: height of the strip; each frame is resized to it, its aspect
      ratio kept.

  Returns:
    `uint8 [height, num * w, 3]` with `w = round(W * height / H)` (the first
    column of every frame but the first is a grey line), for
    `SummaryWriter.add_image(tag, strip, step, dataformats="HWC")`.
  """
  _check_frames(frames)
  if num < 1 or height < 1:
    raise ValueError(f"num and height must be positive, got {num}, {height}")
  h, w = frames[0].shape[:2]
  width = max(1, round(w * height / h))
  picks = np.linspace(0, len(frames) - 1, num).round().astype(int)
  strip = np.concatenate([_resize(frames[i], height, width) for i in picks],
                         axis=1)
  if width > 2:
    # A grey column where two frames meet: a dark background would
    # otherwise run on from one frame into the next.
    strip[:, width::width] = 128
  return strip


def check_video_path(path: str) -> str:
  """The lower-case extension of `path` if a video can be written there.

  Raises `ValueError` for an extension other than .mp4/.gif and
  `ImportError` when the `video` extra is not installed, so a script can
  stop before a long evaluation rather than after it.
  """
  extension = os.path.splitext(path)[1].lower()
  if extension not in VIDEO_EXTENSIONS:
    raise ValueError(f"cannot write a video to {path!r}: the file name must "
                     f"end in {' or '.join(VIDEO_EXTENSIONS)}")
  # pylint: disable=import-outside-toplevel,unused-import
  try:  # Optional: only writing a video needs them.
    import imageio
    if extension == ".mp4":
      import imageio_ffmpeg
  except ImportError:
    raise ImportError(f"writing {extension} videos needs imageio"
                      f"{' and imageio-ffmpeg' if extension == '.mp4' else ''}"
                      f": {INSTALL_HINT}") from None
  return extension


def _magnify(frame: np.ndarray, factor: int) -> np.ndarray:
  if factor == 1:
    return frame
  return np.repeat(np.repeat(frame, factor, axis=0), factor, axis=1)


def _pad_to_even(frame: np.ndarray) -> np.ndarray:
  # H.264 in yuv420p (what players accept) needs even sides; repeating the
  # last row/column adds no visible border, unlike imageio's default of
  # resizing to a multiple of 16.
  h, w = frame.shape[:2]
  if h % 2 == 0 and w % 2 == 0:
    return frame
  return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str, frames: Sequence[np.ndarray], fps: float = 30,
                min_height: int = 160) -> str:
  """Writes `frames` to `path` (.mp4 or .gif); returns the path.

  Args:
    path: a `.mp4` (H.264 through imageio-ffmpeg) or `.gif` (imageio with
      pillow) file; its folder is created.
    frames: `[T]` RGB frames `uint8 [H, W, 3]`, all of one size.
    fps: frames per second. A GIF stores delays in 1/100 s and viewers
      slow down delays under 0.02 s, so a GIF plays at most 50 frames/s;
      pillow stores a frame equal to the one before as a longer delay of
      that one, so a GIF may hold fewer frames than were given.
    min_height: frames lower than this are magnified by a whole factor
      (nearest neighbour), so a 10x10 MinAtar grid is watchable.

  Frames with an odd height or width are padded by one row/column for mp4.
  Raises `ValueError` for another extension or bad frames, `ImportError`
  when the `video` extra is missing.
  """
  extension = check_video_path(path)
  _check_frames(frames)
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  import imageio.v2 as iio  # pylint: disable=import-outside-toplevel
  import imageio.v3 as iio3  # pylint: disable=import-outside-toplevel
  factor = max(1, math.ceil(min_height / frames[0].shape[0]))
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  if extension == ".mp4":
    writer = iio.get_writer(path, format="FFMPEG", mode="I", fps=fps,
                            codec="libx264", pixelformat="yuv420p",
                            macro_block_size=2, ffmpeg_log_level="error")
    with writer, warnings.catch_warnings():
      # JAX warns at any fork; the ffmpeg subprocess execs straight after it.
      warnings.filterwarnings("ignore", r"os\.fork\(\) was called",
                              RuntimeWarning)
      for frame in frames:  # One at a time: no second copy of the episode.
        writer.append_data(_pad_to_even(_magnify(frame, factor)))
  else:
    delay_ms = max(20, round(100 / fps) * 10)
    with iio3.imopen(path, "w", plugin="pillow") as writer:
      for frame in frames:
        writer.write(_magnify(frame, factor), is_batch=False,
                     duration=delay_ms, loop=0)
  return path
