# Copyright (C) 2026 anomalib-clipad contributors
# SPDX-License-Identifier: Apache-2.0

"""The CLIP image tower, with the taps that anomaly-detection methods read.

One forward pass of :class:`ClipVisionTower` returns what a method asks for:

* ``class_token``: the image embedding (original path, ``ln_post`` then ``proj``), as ``CLIP.encode_image``;
* ``final_class_token``: the raw class token of the original path after the last block (before ``ln_post``), for
  methods that project it differently (AnomalyCLIP's reference: ``proj`` without ``ln_post``);
* ``patch_tokens[l]``: raw patch tokens of the original path after block ``l`` (1-indexed);
* ``attention_tokens[l]``: raw patch tokens of the original path inside block ``l``, after its attention residual and
  before its MLP (where the PromptAD reference code's aliased hooks read its "layer ``l - 1``" memory);
* ``vv_tokens[l]``: raw patch tokens of the dual-path V-V stream after block ``l`` (see :mod:`.attention`);
* ``window_tokens[s]``: for each window set ``s``, the class token of the ViT run on each window's tokens only
  (WinCLIP's window features, MAE-style masking: tokens outside the window are dropped, not zeroed), all windows of a
  set in one batched forward.

Layer numbering is 1-indexed like the papers: ``patch_tokens[3]`` is the output of the third block, and
``vv_start_layer=1`` puts V-V attention in every block. :meth:`ClipVisionTower.project` applies ``ln_post`` and
``proj`` to any tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .attention import block_on_flat_tokens, class_token_block, value_value_attention

POSITION_INTERPOLATION_MODES = ("bilinear", "bicubic")


@dataclass
class VisionFeatures:
    """The taps of one forward pass of :class:`ClipVisionTower`.

    Attributes:
        class_token: ``(B, D)`` projected class token of the original path.
        patch_tokens: layer -> ``(B, N, width)`` raw patch tokens of the original path after that block.
        attention_tokens: layer -> ``(B, N, width)`` raw patch tokens of the original path after that block's
            attention residual (before its MLP).
        vv_tokens: layer -> ``(B, N, width)`` raw patch tokens of the V-V stream after that block.
        window_tokens: one ``(B, n_windows, D)`` tensor of projected window class tokens per window set.
        grid_size: ``(rows, columns)`` of the patch grid; ``N = rows * columns``.
        final_class_token: ``(B, width)`` raw class token of the original path after the last block (before
            ``ln_post`` and ``proj``).
    """

    class_token: torch.Tensor
    grid_size: tuple[int, int]
    patch_tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    attention_tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    vv_tokens: dict[int, torch.Tensor] = field(default_factory=dict)
    window_tokens: list[torch.Tensor] = field(default_factory=list)
    final_class_token: torch.Tensor | None = None


def window_indices(grid_size: tuple[int, int], window_size: int, stride: int = 1) -> torch.Tensor:
    """Patch indices of every square window that slides over a patch grid.

    Args:
        grid_size: ``(rows, columns)`` of the patch grid.
        window_size: side of a window in patches (WinCLIP uses 2 and 3).
        stride: step between windows in patches.

    Returns:
        ``LongTensor`` of shape ``(n_windows, window_size ** 2)``; row ``w`` lists the flat (row-major) indices of the
        patches of window ``w``; windows are ordered row-major by their top-left patch.

    Raises:
        ValueError: the window does not fit in the grid, or the size or stride is not positive.
    """
    rows, columns = grid_size
    if window_size < 1 or stride < 1:
        msg = f"Window size and stride must be positive, got {window_size} and {stride}."
        raise ValueError(msg)
    if window_size > min(rows, columns):
        msg = f"A {window_size}x{window_size} window does not fit in a {rows}x{columns} patch grid."
        raise ValueError(msg)
    grid = torch.arange(rows * columns, dtype=torch.float64).view(1, 1, rows, columns)
    patches = F.unfold(grid, kernel_size=window_size, stride=stride)  # (1, k*k, n_windows)
    return patches[0].T.round().long()


def validate_images(images: torch.Tensor, expected_size: tuple[int, int] | None = None) -> None:
    """Raise a clear error for inputs a CLIP model cannot take.

    Args:
        images: the batch given to a model.
        expected_size: ``(height, width)`` the model was set up for, or ``None`` to accept any size.

    Raises:
        TypeError: ``images`` is not a floating-point tensor.
        ValueError: wrong rank, not 3 channels (e.g. grayscale), or a size other than ``expected_size``.
    """
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        msg = f"Expected a floating-point image tensor of shape (B, 3, H, W), got {type(images).__name__}."
        raise TypeError(msg)
    if images.ndim != 4:
        msg = f"Expected images of shape (B, 3, H, W), got shape {tuple(images.shape)}."
        raise ValueError(msg)
    if images.shape[1] != 3:
        msg = (
            f"Expected 3-channel RGB images, got {images.shape[1]} channel(s) (shape {tuple(images.shape)}). "
            "Convert grayscale images to RGB (anomalib's datasets do so when they read images)."
        )
        raise ValueError(msg)
    if expected_size is not None and tuple(images.shape[-2:]) != tuple(expected_size):
        msg = (
            f"Expected images of size {tuple(expected_size)} (height, width), got {tuple(images.shape[-2:])}. "
            "Resize them with the model's pre-processor (anomalib applies it automatically)."
        )
        raise ValueError(msg)


class ClipVisionTower(nn.Module):
    """Frozen CLIP ViT image tower returning intermediate, V-V and window features in one pass.

    Args:
        visual: ``clip.visual`` of an open_clip CLIP model with a class-token ViT.
        position_interpolation: how position embeddings are resized in the forward pass when the input's patch grid
            differs from the one the weights were trained for: ``"bilinear"`` (AnomalyCLIP's reference) or
            ``"bicubic"``. Resizing once at load time instead is :func:`~anomalib_clipad.clip.builder.build_clip`'s
            ``position_embedding="resize_at_load"``.

    Raises:
        TypeError: the tower is not a class-token ViT built of standard open_clip blocks.
        ValueError: unknown interpolation mode.
    """

    def __init__(self, visual: nn.Module, position_interpolation: str = "bicubic") -> None:
        super().__init__()
        if not hasattr(visual, "transformer") or getattr(visual, "pool_type", "tok") != "tok":
            msg = "Only class-token ViT image towers of open_clip are supported."
            raise TypeError(msg)
        if getattr(visual, "attn_pool", None) is not None:
            msg = "Image towers with attentional pooling are not supported."
            raise TypeError(msg)
        if not visual.transformer.batch_first:
            msg = "The image transformer must be batch-first (open_clip >= 2.23 builds it so)."
            raise TypeError(msg)
        if position_interpolation not in POSITION_INTERPOLATION_MODES:
            msg = f"position_interpolation must be one of {POSITION_INTERPOLATION_MODES}: {position_interpolation!r}."
            raise ValueError(msg)
        self.conv1 = visual.conv1
        self.class_embedding = visual.class_embedding
        self.positional_embedding = visual.positional_embedding
        self.ln_pre = visual.ln_pre
        self.blocks = visual.transformer.resblocks
        self.ln_post = visual.ln_post
        self.proj = visual.proj
        self.position_interpolation = position_interpolation
        self.patch_size = int(visual.conv1.kernel_size[0])
        self.trained_grid_size = tuple(int(size) for size in visual.grid_size)

    @property
    def width(self) -> int:
        """Width of the transformer tokens."""
        return int(self.class_embedding.shape[0])

    @property
    def output_dim(self) -> int:
        """Dimension of the projected (joint image-text) embedding."""
        return int(self.proj.shape[1]) if self.proj is not None else self.width

    @property
    def num_layers(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(rows, columns)`` of an input of ``image_size`` ``(height, width)``."""
        return image_size[0] // self.patch_size, image_size[1] // self.patch_size

    def position_embedding(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """Position embeddings ``(1 + rows * columns, width)`` for a patch grid, interpolated if needed."""
        if tuple(grid_size) == self.trained_grid_size:
            return self.positional_embedding
        class_position, patch_positions = self.positional_embedding[:1], self.positional_embedding[1:]
        rows, columns = self.trained_grid_size
        patch_positions = patch_positions.reshape(1, rows, columns, -1).permute(0, 3, 1, 2)
        patch_positions = F.interpolate(
            patch_positions,
            size=tuple(grid_size),
            mode=self.position_interpolation,
            align_corners=False,
        )
        patch_positions = patch_positions.permute(0, 2, 3, 1).reshape(-1, self.width)
        return torch.cat([class_position, patch_positions], dim=0)

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch embedding, class token and position embedding, before ``ln_pre``.

        Returns:
            Tokens ``(B, 1 + N, width)`` (class token first) and the patch grid size.
        """
        patches = self.conv1(images)  # (B, width, rows, columns)
        grid_size = (int(patches.shape[-2]), int(patches.shape[-1]))
        patches = patches.flatten(2).transpose(1, 2)
        class_token = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([class_token, patches], dim=1)
        return tokens + self.position_embedding(grid_size).to(patches.dtype), grid_size

    def project(self, tokens: torch.Tensor) -> torch.Tensor:
        """Apply ``ln_post`` and the projection into the joint embedding space to tokens ``(..., width)``."""
        tokens = self.ln_post(tokens)
        return tokens @ self.proj if self.proj is not None else tokens

    def forward(
        self,
        images: torch.Tensor,
        patch_layers: Sequence[int] = (),
        vv_start_layer: int | None = None,
        vv_layers: Sequence[int] = (),
        windows: Sequence[torch.Tensor] = (),
        *,
        attention_layers: Sequence[int] = (),
    ) -> VisionFeatures:
        """Run the tower once and return the requested taps.

        Args:
            images: normalised images ``(B, 3, H, W)``.
            patch_layers: blocks (1-indexed) whose original-path patch tokens to return.
            vv_start_layer: first block (1-indexed) with a V-V path; ``None`` for no V-V stream.
            vv_layers: blocks (1-indexed, ``>= vv_start_layer``) whose V-V stream patch tokens to return.
            windows: window index sets from :func:`window_indices`; one ``window_tokens`` entry per set.
            attention_layers: blocks (1-indexed) whose patch tokens after the attention residual (before the MLP) to
                return.

        Returns:
            The :class:`VisionFeatures` of the batch.

        Raises:
            ValueError: a layer is out of range, V-V layers without a V-V start, or invalid images.
        """
        validate_images(images)
        self.check_layers([*patch_layers, *attention_layers], vv_start_layer, vv_layers)
        embedded, grid_size = self.embed(images)
        hidden = self.ln_pre(embedded)
        vv_stream = None
        features = VisionFeatures(class_token=hidden[:, 0], grid_size=grid_size)
        for layer, block in enumerate(self.blocks, start=1):
            if vv_start_layer is not None and layer >= vv_start_layer:
                vv_stream = hidden if vv_stream is None else vv_stream
                vv_stream = vv_stream + value_value_attention(block, block.ln_1(hidden))
            if layer in attention_layers:
                hidden = hidden + block.ls_1(block.attention(q_x=block.ln_1(hidden)))
                features.attention_tokens[layer] = hidden[:, 1:]
                hidden = hidden + block.ls_2(block.mlp(block.ln_2(hidden)))
            else:
                hidden = block(hidden)
            if layer in patch_layers:
                features.patch_tokens[layer] = hidden[:, 1:]
            if layer in vv_layers:
                features.vv_tokens[layer] = vv_stream[:, 1:]
        features.final_class_token = hidden[:, 0]
        features.class_token = self.project(hidden[:, 0])
        features.window_tokens = [self.window_class_tokens(embedded, indices) for indices in windows]
        return features

    def window_class_tokens(self, embedded: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Projected class token of the ViT run on each window's tokens only (all windows in one batch).

        Exactly the ViT on each window's ``1 + k`` tokens, computed without work whose result is not read: the last
        block computes only the class token's output (the other tokens serve as its keys and values,
        :func:`~anomalib_clipad.clip.attention.class_token_block`).

        Args:
            embedded: tokens from :meth:`embed` ``(B, 1 + N, width)`` (position embeddings already added).
            indices: ``(n_windows, k)`` patch indices of each window (from :func:`window_indices`).

        Returns:
            ``(B, n_windows, D)`` window embeddings.
        """
        batch, _, width = embedded.shape
        n_windows, window_length = indices.shape
        patches = embedded[:, 1:][:, indices.reshape(-1)].reshape(batch * n_windows, window_length, width)
        class_token = embedded[:, :1].expand(batch, n_windows, width).reshape(batch * n_windows, 1, width)
        hidden = self.ln_pre(torch.cat([class_token, patches], dim=1))
        # exported graphs: per-token layers on (B * L, width) rows, which OpenVINO runs faster for these short
        # sequences (see anomalib_clipad.clip.attention); eager torch: the block's own forward (its fast path)
        exporting = torch.onnx.is_in_onnx_export()
        for block in self.blocks[:-1]:
            hidden = block_on_flat_tokens(block, hidden) if exporting else block(hidden)
        class_tokens = class_token_block(self.blocks[-1], hidden)
        return self.project(class_tokens).reshape(batch, n_windows, -1)

    def check_state_dict(self, state_dict: dict[str, torch.Tensor], key: str, owner: str) -> None:
        """Refuse weights of another image tower before a model loads them.

        Args:
            state_dict: the state dict being loaded.
            key: the key of this tower's position embedding in it (e.g. ``"model.vision.positional_embedding"``).
            owner: the model's description for the message (e.g. ``"PromptAD (ViT-B-16-plus-240)"``).

        Raises:
            ValueError: the stored position embedding has another shape (another backbone or input size).
        """
        stored = state_dict.get(key)
        if stored is not None and stored.shape != self.positional_embedding.shape:
            msg = (
                f"This checkpoint was made with another backbone (image position embeddings {tuple(stored.shape)}); "
                f"{owner} has {tuple(self.positional_embedding.shape)}. Build the model with the checkpoint's backbone."
            )
            raise ValueError(msg)

    def check_image_size(self, image_size: int, backbone: str = "this backbone") -> None:
        """Raise a clear error unless a square input of ``image_size`` pixels splits into whole patches.

        Raises:
            ValueError: ``image_size`` is not a positive multiple of the patch size.
        """
        if image_size < self.patch_size or image_size % self.patch_size:
            msg = f"image_size {image_size} is not a multiple of the patch size {self.patch_size} of {backbone}."
            raise ValueError(msg)

    def check_layers(
        self,
        layers: Sequence[int] = (),
        vv_start_layer: int | None = None,
        vv_layers: Sequence[int] = (),
        *,
        argument: str | None = None,
        backbone: str | None = None,
    ) -> None:
        """Raise a clear error for blocks this tower does not have (1-indexed, like the papers).

        Args:
            layers: blocks whose tokens are read.
            vv_start_layer: first block with a V-V path, if any.
            vv_layers: blocks whose V-V tokens are read (need ``vv_start_layer <= min(vv_layers)``).
            argument: the model argument the blocks come from (e.g. ``"feature_layers"``): the error says to change
                it (``--model.<argument>`` on the command line).
            backbone: the backbone's name, for the error.

        Raises:
            ValueError: a layer outside ``1..num_layers`` (naming ``argument`` and the tower's depth), or V-V layers
                before the V-V start.
        """
        for layer in [*layers, *vv_layers, *([vv_start_layer] if vv_start_layer is not None else [])]:
            if not 1 <= int(layer) <= self.num_layers:
                tower = f"the image tower of {backbone}" if backbone else "this image tower"
                msg = (
                    f"Layer {layer} does not exist: {tower} has {self.num_layers} blocks (blocks 1..{self.num_layers})."
                )
                if argument:
                    msg += (
                        f" Change {argument} (command line: --model.{argument}) to blocks within 1..{self.num_layers}, "
                        "or use a deeper backbone."
                    )
                raise ValueError(msg)
        if vv_layers and (vv_start_layer is None or min(vv_layers) < vv_start_layer):
            msg = f"V-V tokens of layers {list(vv_layers)} need vv_start_layer <= {min(vv_layers)}."
            raise ValueError(msg)
