"""The streaming engine of video inference: :class:`StreamingSegmenter` runs SCNet over a stream one frame at a time."""
import torch

from lib.infer.labels import correction_labels, logits_to_labels


class StreamingSegmenter:
    """Runs SCNet (or a ``FastSCNet``) over a stream one frame at a time, a key-frame policy choosing the key frames.

    ``tail``: ``lib.infer.labels.TAILS`` (``full`` is the paper's); ``correct=False``: propagation only (DFF-style).
    The network calls go through :meth:`key_frame`, :meth:`flow` and :meth:`correction`, which a replay overrides.
    """

    def __init__(self, model, policy, tail='full', correct=True):
        self.model, self.policy, self.tail, self.correct = model, policy, tail, correct
        self.reset()

    def reset(self):
        self.policy.reset()
        self.state, self.previous, self.index = None, None, -1  # index: the frame being processed

    def key_frame(self, image):
        return self.model.key_frame(image)

    def flow(self, image, previous):
        return self.model.estimate_flow(image, previous)

    def correction(self, image):
        """CFNet logits of ``image``; None lets ``SCNet.correct`` compute them."""
        return None

    def propagate_and_correct(self, image):
        """A non-key frame -> (the state carried to ``image``, ``SCNet.correct``'s dict); a backend replaces it."""
        state = self.model.propagate(self.state, self.flow(image, self.previous))
        return state, self.model.correct(state, image, correction=self.correction(image),
                                         full_resolution=self.tail == 'full')

    @torch.no_grad()
    def step(self, image):
        """image (1, 3, H, W) RGB in [0, 1], H and W multiples of 4 -> labels (1, H, W) int64, is_key, distortion:
        DMNet's map (1, 1, H, W) (``tail='full'``) or (1, 1, H/4, W/4), None for a key frame or ``correct=False``."""
        self.index += 1
        is_key = self.policy.is_key()
        size, align_corners = image.shape[-2:], self.model.align_corners
        if is_key:
            self.state = self.key_frame(image)
            labels, distortion = logits_to_labels(self.state.logits, size, align_corners, self.tail), None
        elif not self.correct:
            self.state = self.model.propagate(self.state, self.flow(image, self.previous))
            labels, distortion = logits_to_labels(self.state.logits, size, align_corners, self.tail), None
        else:
            self.state, out = self.propagate_and_correct(image)
            labels, distortion = correction_labels(out, size, align_corners, self.tail), out['distortion']
        self.policy.update(is_key, distortion)  # labels: (1, H, W); distortion: (1, 1, ., .)
        self.previous = image
        return labels, is_key, distortion
