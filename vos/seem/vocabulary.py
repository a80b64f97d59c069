"""Class vocabulary and prompt templates used by SEEM's text side (spec §8.3, §9, Appendices B and C).

The decoder's class head scores every query against one text embedding per entry of
``DEFAULT_VOCABULARY = COCO_PANOPTIC_CLASSES + ("background",)`` (K = 134); column 133 is the "background"
embedding, shown to users as "others".
"""

from __future__ import annotations

from collections.abc import Sequence

# Index = COCO panoptic contiguous id; 0-79 are "things", 80-132 "stuff". Raw names (with -other/-merged/-stuff).
COCO_PANOPTIC_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush", "banner", "blanket", "bridge", "cardboard", "counter", "curtain", "door-stuff", "floor-wood",
    "flower", "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow", "platform", "playingfield",
    "railroad", "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs", "tent", "towel", "wall-brick",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "window-blind", "window-other", "tree-merged",
    "fence-merged", "ceiling-merged", "sky-other-merged", "cabinet-merged", "table-merged", "floor-other-merged",
    "pavement-merged", "mountain-merged", "grass-merged", "dirt-merged", "paper-merged", "food-other-merged",
    "building-other-merged", "rock-merged", "wall-other-merged", "rug-merged",
)

NUM_THING_CLASSES = 80
BACKGROUND_NAME = "background"  # the text encoded for logit column 133
BACKGROUND_DISPLAY_NAME = "others"  # how the demo labels that column
# The 134 names whose embeddings form ``default_text_embeddings`` (the demo's start-up call).
DEFAULT_VOCABULARY: tuple[str, ...] = COCO_PANOPTIC_CLASSES + (BACKGROUND_NAME,)

# The 81 eval-time prompt templates, in the official order (order matters only for bit-level summation parity).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "{}.", "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.",
    "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.", "the toy {}.",
    "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
    "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.",
    "a photo of the small {}.", "a photo of the weird {}.", "the cartoon {}.", "art of the {}.",
    "a drawing of the {}.", "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.",
    "a dark photo of a {}.", "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.",
    "a photo of a cool {}.", "a photo of a small {}.", "a tattoo of the {}.",
)


def clean_class_name(name: str) -> str:
    """Prompt-time cleaning: delete "-other", then "-merged", then "-stuff" (e.g. sky-other-merged → sky)."""
    return name.replace("-other", "").replace("-merged", "").replace("-stuff", "")


def display_class_name(name: str) -> str:
    """Demo display name: "-other" and "-merged" removed but "-stuff" kept (spec §9)."""
    return name.replace("-other", "").replace("-merged", "")


def display_names() -> tuple[str, ...]:
    """Labels for the 134 logit columns as the official demo shows them (background → "others")."""
    return tuple(display_class_name(n) for n in COCO_PANOPTIC_CLASSES) + (BACKGROUND_DISPLAY_NAME,)


def is_thing(index: int) -> bool:
    """True for COCO "thing" classes (0-79); stuff is 80-132; 133 (background) is neither."""
    return 0 <= index < NUM_THING_CLASSES


def prompts_for(name: str, templates: Sequence[str] = PROMPT_TEMPLATES) -> list[str]:
    """All prompt sentences for one class name (cleaned first), in template order."""
    cleaned = clean_class_name(name)
    return [template.format(cleaned) for template in templates]
