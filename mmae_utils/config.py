"""The options of the multi-modal autoencoder: one typed, validated configuration.

:class:`ModelConfig` is the one list of the model's options, with their defaults and
meaning; :data:`PRESETS` holds the named configurations. Build a model from one with
:func:`mmae_utils.model.build_model`::

    config = ModelConfig.from_preset("seed", latent_dim=10)
    mmae = build_model(gex.n_vars, atac.n_vars, config=config)

This module does not import the model or its layers (they import it).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import keras
import numpy as np

__all__ = [
    "ATAC_INPUTS",
    "ATAC_LIKELIHOODS",
    "DECODERS",
    "DEFAULT_CONFIG",
    "DEFAULT_PRESET",
    "FUSIONS",
    "GEX_INPUTS",
    "GEX_LIKELIHOODS",
    "INTEGRATIONS",
    "LATENT_SCALINGS",
    "MODALITIES",
    "OUTPUT_ACTIVATIONS",
    "PRESETS",
    "ModelConfig",
    "check_activation",
    "check_categories",
    "check_int",
    "check_names",
    "check_rate",
    "overrides",
]

Decoders = Literal["joint", "own"]
GexInput = Literal["log", "standardize", "svd"]
AtacInput = Literal["binary", "tfidf", "svd"]
LatentScaling = Literal["none", "block"]
Fusion = Literal["concat", "shared"]
GexLikelihood = Literal["mse", "nb"]
AtacLikelihood = Literal["auto", "mse", "bernoulli"]
OutputActivation = Literal["linear", "relu"]
Integration = Literal["none", "harmony"]

#: Valid values of the :class:`ModelConfig` fields of the same name.
DECODERS: tuple[str, ...] = get_args(Decoders)
GEX_INPUTS: tuple[str, ...] = get_args(GexInput)
ATAC_INPUTS: tuple[str, ...] = get_args(AtacInput)
LATENT_SCALINGS: tuple[str, ...] = get_args(LatentScaling)
FUSIONS: tuple[str, ...] = get_args(Fusion)
INTEGRATIONS: tuple[str, ...] = get_args(Integration)
GEX_LIKELIHOODS: tuple[str, ...] = get_args(GexLikelihood)
ATAC_LIKELIHOODS: tuple[str, ...] = get_args(AtacLikelihood)
OUTPUT_ACTIVATIONS: tuple[str, ...] = get_args(OutputActivation)

#: The two modalities, in the order of the joint code.
MODALITIES = ("gex", "atac")


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` >= ``minimum``; ``TypeError`` / ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__}); "
            "layer sizes are whole numbers (use latent_dim // 2, not latent_dim / 2)."
        )
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def check_rate(name: str, value) -> float:
    """``value`` as a ``float`` in [0, 1) (a dropout rate)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}.")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")
    return value


def check_activation(name: str, value) -> str | None:
    """The name of a Keras activation, or ``None`` for linear (``"linear"`` too)."""
    if value is None or value == "linear":
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be the name of a Keras activation or None, got {value!r}.")
    try:
        keras.activations.get(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"Unknown {name} {value!r}: {err}") from None
    return value


def _check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    return value


def _check_loss_weight(name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def _check_fusion(checked: dict) -> None:
    """``ValueError`` for the options that split the code, with ``fusion="shared"``."""
    if checked["fusion"] != "shared":
        return
    fixes = []
    if checked.get("gex_latent_dim") is not None:
        fixes.append("gex_latent_dim=None")
    if checked["decoders"] == "own":
        fixes.append('decoders="joint"')
    if checked["latent_scaling"] == "block":
        fixes.append('latent_scaling="none"')
    if fixes:
        raise ValueError(
            'fusion="shared" makes one code with no GEX and ATAC parts, for both decoders '
            "to read whole and with nothing to split, scale or read apart: set "
            f'{", ".join(fixes)} (or fusion="concat").'
        )


def _check_hidden(value) -> tuple[int, ...]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise TypeError(f"hidden must be a sequence of integer layer sizes, got {value!r}.")
    return tuple(check_int(f"hidden[{i}]", h) for i, h in enumerate(value))


def check_categories(categories) -> tuple[str, ...] | None:
    """Batch names as a tuple of distinct ``str`` (``None`` stays ``None``).

    Returns
    -------
    The tuple, or ``None``; ``TypeError`` for a string, ``ValueError`` for an empty or
    repeating sequence.
    """
    if categories is None:
        return None
    if isinstance(categories, str):
        raise TypeError("batch_categories must be a sequence of batch names, not a string.")
    names = tuple(str(c) for c in categories)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"batch_categories must be distinct and not empty, got {list(names)}.")
    return names


def check_names(where: str, names: Iterable[str], allowed: Iterable[str]) -> None:
    """``TypeError`` naming ``where``, the unknown ``names`` and the ``allowed`` ones."""
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise TypeError(
            f"{where} got unknown option(s) {unknown}; valid options: {sorted(allowed)}."
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The options of the multi-modal autoencoder (:func:`mmae_utils.model.build_model`).

    Frozen and validated on construction: a bad value raises a ``TypeError`` or a
    ``ValueError`` naming the option. Lists are stored as tuples, numbers as ``int`` /
    ``float``. The defaults below are those of the original model with its defects fixed
    (the ``"seed"`` preset); ``"original"`` (the seed notebook's model as it was),
    ``"jae"``, ``"jae_batch"`` (``"jae"`` with ``batch_conditioning=True``),
    ``"jae_harmony"`` (:data:`DEFAULT_PRESET`: ``"jae_batch"`` with
    ``integration="harmony"``) and ``"mmae"`` (``"jae"`` with a shared code,
    batch-conditioned decoders and count likelihoods, ``latent_scaling="none"``) differ
    as noted. Start from a preset with :meth:`from_preset` and change options with
    :meth:`replace`.

    Parameters
    ----------
    latent_dim : int, default 20
        Size of the joint code (at least 2).
    hidden : tuple of int, default (250,)
        Sizes of the hidden Dense layers of each encoder; the decoders mirror them.
    gex_latent_dim : int or None, default None
        GEX encoder's part of the joint code; ATAC gets the rest. ``None``:
        ``latent_dim // 2`` (see :attr:`latent_split`).
    decoders : {"joint", "own"}, default "joint"
        ``"joint"``: both decoders read the whole joint code (Figure 4). ``"own"``: each
        decoder reads only its own modality's part (the original notebook's wiring, for
        comparison).
    activation : str or None, default "relu"
        Keras activation of the hidden layers (``None`` or ``"linear"``: linear).
    dropout : float in [0, 1), default 0.0
        Dropout rate after each hidden layer.
    batch_norm : bool, default False (``"jae"``: True)
        Batch normalisation after each hidden layer (before its activation).
    latent_dropout : float in [0, 1), default 0.0
        Dropout on the joint code where the decoders read it (the embedding is taken
        before it).
    modality_dropout : float in [0, 1), default 0.0
        Fraction of the cells of each training batch whose GEX or ATAC input (one of the
        two, at random) is zeroed, so the code also works from a single modality (Ngiam
        et al.). Active only during training; seeded.
    gex_loss_weight, atac_loss_weight : float >= 0, default 0.5 each
        Weights of the GEX and ATAC losses in the total loss (each loss is a mean over
        its outputs, so 2,500 genes and 5,000 peaks weigh as the weights say); not both 0.
    gex_input : {"log", "standardize", "svd"}, default "log" (``"jae"``: "svd")
        What the network sees of GEX: ``"log"`` the log-normalised values,
        ``"standardize"`` per-gene z-scores (clipped at 10), ``"svd"`` the first
        ``n_components`` principal components (see
        :class:`~mmae_utils.layers.InputTransform`). Under ``gex_likelihood="mse"`` the
        GEX loss is the MSE in that space.
    atac_input : {"binary", "tfidf", "svd"}, default "binary" (``"jae"``: "svd")
        ATAC: ``"binary"`` accessible or not, ``"tfidf"`` TF-IDF values or ``"svd"`` LSI
        components (see ``atac_likelihood`` for the loss each gets).
    gex_likelihood : {"mse", "nb"}, default "mse" (``"mmae"``: "nb")
        The GEX loss. ``"mse"``: mean squared error in the space the network sees
        (``gex_input``). ``"nb"``: negative binomial negative log-likelihood of the raw
        counts of the genes themselves (``layers["counts"]``), whatever ``gex_input`` is:
        the decoder outputs one value per gene, whose softmax times the cell's library
        size (its total count over these genes) is the mean, with a learned inverse
        dispersion per gene (as scVI); the loss is the mean over the genes.
    atac_likelihood : {"auto", "mse", "bernoulli"}, default "auto" (``"mmae"``: "bernoulli")
        The ATAC loss. ``"bernoulli"``: binary cross-entropy of the binarised peaks
        themselves, on one logit per peak, whatever ``atac_input`` is. ``"mse"``: mean
        squared error in the space the network sees (TF-IDF values or LSI components; not
        with ``atac_input="binary"``). ``"auto"``: ``"bernoulli"`` for ``"binary"``
        input, else ``"mse"`` (what each input had before this option).
    output_activation : {"linear", "relu"}, default "linear" (``"original"``: "relu")
        ``"relu"`` rebuilds the seed notebook's outputs: a ReLU on both decoders' outputs,
        and under the Bernoulli likelihood the ReLU output read as the probability itself
        (clipped to [1e-7, 1 - 1e-7], as Keras' ``binary_crossentropy`` does), so the
        model cannot predict below 1e-7 nor push a closed peak's gradient past the clip.
        For the before-and-after only; not with ``gex_likelihood="nb"``.
    n_components : int, default 100
        Components per modality for the ``"svd"`` inputs (fewer than the modality's
        features). Transforms are fitted on the cells of the first
        :func:`~mmae_utils.training.train` call.
    latent_scaling : {"none", "block"}, default "none" (``"jae"``: "block")
        ``"block"``: the embedding's GEX and ATAC parts are scaled to the same total
        variance (factors fixed after training, see :class:`~mmae_utils.layers.BlockScale`).
    fusion : {"concat", "shared"}, default "concat" (``"mmae"``: "shared")
        How the joint code is made. ``"concat"``: each encoder ends in its own linear
        Dense layer and the code is the two parts side by side (``gex_latent_dim`` and
        the rest). ``"shared"``: Ngiam et al.'s bimodal autoencoder (the shared
        representation of Figure 4): one linear Dense layer reads both encoders' last
        hidden layers, concatenated, and makes the whole code, so every unit depends on
        both modalities. That code has no per-modality parts, so ``gex_latent_dim``,
        ``decoders="own"`` and ``latent_scaling="block"`` are refused with it.
    batch_conditioning : bool, default False (``"jae_batch"``, ``"jae_harmony"``, ``"mmae"``: True)
        The decoders read the code concatenated with a one-hot of the cell's batch (as
        scVI and MultiVI), so the code need not carry the batch. The encoders never read
        it: any cells, of batches seen or not, are embedded alike; decoding needs one of
        the batches the model knows (``batch_categories`` of
        :func:`~mmae_utils.model.build_model`).
    adversarial_batch : float >= 0, default 0.0
        Weight of an adversarial batch loss: a small classifier (a hidden layer of 32
        units) predicts the cell's batch from the code through a gradient-reversal layer,
        so that while it learns to tell the batches apart the encoders learn to make it
        fail (the JAE model of the NeurIPS 2021 competition pushed its batch block the
        same way). Its cross-entropy times this weight is added to the loss and logged,
        unweighted, as ``batch_loss``. 0: no classifier.
    integration : {"none", "harmony"}, default "none" (``"jae_harmony"``: "harmony")
        What :func:`~mmae_utils.training.embed` makes of the code. ``"none"``: the
        embedding is the code. ``"harmony"``: the code of all cells embedded together is
        corrected for their batch by Harmony (:func:`mmae_utils.integration.harmony`,
        the same call as the ``harmony`` baseline makes on ``pca_concat``). The network
        is the same either way and never reads the batch; embedding then needs each
        cell's batch label, of a batch seen in training or not.
    seed : int >= 0 or None, default 0
        Seed of the weight initialisation and of the dropout masks (``None``: Keras'
        global seed).
    """

    latent_dim: int = 20
    hidden: tuple[int, ...] = (250,)
    gex_latent_dim: int | None = None
    decoders: Decoders = "joint"
    activation: str | None = "relu"
    dropout: float = 0.0
    batch_norm: bool = False
    latent_dropout: float = 0.0
    modality_dropout: float = 0.0
    gex_loss_weight: float = 0.5
    atac_loss_weight: float = 0.5
    gex_input: GexInput = "log"
    atac_input: AtacInput = "binary"
    n_components: int = 100
    latent_scaling: LatentScaling = "none"
    gex_likelihood: GexLikelihood = "mse"
    atac_likelihood: AtacLikelihood = "auto"
    fusion: Fusion = "concat"
    batch_conditioning: bool = False
    adversarial_batch: float = 0.0
    output_activation: OutputActivation = "linear"
    integration: Integration = "none"
    seed: int | None = 0

    def __post_init__(self):
        checked = {
            "latent_dim": check_int("latent_dim", self.latent_dim, minimum=2),
            "hidden": _check_hidden(self.hidden),
        }
        if self.gex_latent_dim is not None:
            checked["gex_latent_dim"] = check_int("gex_latent_dim", self.gex_latent_dim)
            if checked["latent_dim"] - checked["gex_latent_dim"] < 1:
                raise ValueError(
                    f"gex_latent_dim={checked['gex_latent_dim']} leaves no room for ATAC in "
                    f"latent_dim={checked['latent_dim']}."
                )
        checked["decoders"] = _check_choice("decoders", self.decoders, DECODERS)
        checked["activation"] = check_activation("activation", self.activation)
        for name in ("dropout", "latent_dropout", "modality_dropout"):
            checked[name] = check_rate(name, getattr(self, name))
        checked["batch_norm"] = bool(self.batch_norm)
        for name in ("gex_loss_weight", "atac_loss_weight"):
            checked[name] = _check_loss_weight(name, getattr(self, name))
        if checked["gex_loss_weight"] == 0 and checked["atac_loss_weight"] == 0:
            raise ValueError("gex_loss_weight and atac_loss_weight cannot both be 0.")
        checked["latent_scaling"] = _check_choice(
            "latent_scaling", self.latent_scaling, LATENT_SCALINGS
        )
        checked["gex_input"] = _check_choice("gex_input", self.gex_input, GEX_INPUTS)
        checked["atac_input"] = _check_choice("atac_input", self.atac_input, ATAC_INPUTS)
        checked["n_components"] = check_int("n_components", self.n_components)
        checked.update(self._checked_likelihoods(checked["atac_input"]))
        checked["fusion"] = _check_choice("fusion", self.fusion, FUSIONS)
        _check_fusion(checked)
        checked["batch_conditioning"] = _check_bool("batch_conditioning", self.batch_conditioning)
        checked["adversarial_batch"] = _check_loss_weight(
            "adversarial_batch", self.adversarial_batch
        )
        checked["output_activation"] = self._checked_output(checked["gex_likelihood"])
        checked["integration"] = _check_choice("integration", self.integration, INTEGRATIONS)
        if self.seed is not None:
            checked["seed"] = check_int("seed", self.seed, minimum=0)
        for name, value in checked.items():  # normalised values (tuples, ints, floats)
            object.__setattr__(self, name, value)

    def _checked_likelihoods(self, atac_input: str) -> dict[str, str]:
        gex = _check_choice("gex_likelihood", self.gex_likelihood, GEX_LIKELIHOODS)
        atac = _check_choice("atac_likelihood", self.atac_likelihood, ATAC_LIKELIHOODS)
        if atac == "mse" and atac_input == "binary":
            raise ValueError(
                'atac_likelihood="mse" compares values in the space the network sees, but '
                'binarised peaks (atac_input="binary") are reconstructed as logits under '
                'binary cross-entropy: use atac_likelihood="auto" or "bernoulli", or '
                'atac_input="tfidf" / "svd".'
            )
        return {"gex_likelihood": gex, "atac_likelihood": atac}

    def _checked_output(self, gex_likelihood: str) -> str:
        value = _check_choice("output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        if value == "relu" and gex_likelihood == "nb":
            raise ValueError(
                'output_activation="relu" is the seed notebook\'s output for MSE and BCE; '
                "the negative binomial decoder outputs logits of a softmax, which a ReLU "
                'would cut: use gex_likelihood="mse" or output_activation="linear".'
            )
        return value

    @property
    def latent_split(self) -> tuple[int, int]:
        """``(GEX part, ATAC part)`` of the joint code: ``gex_latent_dim`` (default
        ``latent_dim // 2``) and the rest (10 + 10 for 20; 10 + 11 for 21).

        Only with ``fusion="concat"``: a ``"shared"`` code has no parts (``ValueError``).
        """
        if self.fusion == "shared":
            raise ValueError('fusion="shared" makes one code with no GEX and ATAC parts.')
        gex = self.latent_dim // 2 if self.gex_latent_dim is None else self.gex_latent_dim
        return gex, self.latent_dim - gex

    @property
    def needs_batch(self) -> bool:
        """Whether the model reads each cell's batch (``batch_conditioning`` or
        ``adversarial_batch > 0``), so that it must know the batch categories."""
        return self.batch_conditioning or self.adversarial_batch > 0

    @property
    def likelihoods(self) -> dict[str, str]:
        """The loss of each modality, ``"auto"`` resolved: ``{"gex": "mse" or "nb",
        "atac": "mse" or "bernoulli"}``."""
        atac = self.atac_likelihood
        if atac == "auto":
            atac = "bernoulli" if self.atac_input == "binary" else "mse"
        return {"gex": self.gex_likelihood, "atac": atac}

    def loss_label(self, modality: str, *, long: bool = False) -> str:
        """The name of ``modality``'s loss, as the history's ``{modality}_loss`` holds it.

        Short (``long=False``): ``"MSE"``, ``"NB NLL"`` or ``"BCE"``. Long: spelled out,
        with what it compares (``"mean squared error, on components"``, ``"negative
        binomial NLL, on counts"``, ``"binary cross-entropy"``, ...).
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        likelihood = self.likelihoods[modality]
        mode = self.gex_input if modality == "gex" else self.atac_input
        if likelihood == "nb":
            return "negative binomial NLL, on counts" if long else "NB NLL"
        if likelihood == "bernoulli":
            on = "" if mode == "binary" else ", on peaks"
            return f"binary cross-entropy{on}" if long else "BCE"
        if not long:
            return "MSE"
        on = {"svd": ", on components", "standardize": ", on z-scores", "tfidf": ", on TF-IDF"}
        return f"mean squared error{on.get(mode, '')}"

    def describe(self) -> str:
        """What this model sees, makes and reconstructs, as Markdown bullets: the notebooks
        show it so that their text is about the model that is actually trained."""
        k = self.n_components
        sees = {
            "gex": {"log": "the log-normalised genes", "standardize": "per-gene z-scores",
                    "svd": f"{k} principal components of the log-normalised genes"},
            "atac": {"binary": "the binarised peaks", "tfidf": "the peaks' TF-IDF values",
                     "svd": f"{k} LSI components of the peaks (TF-IDF, then truncated SVD)"},
        }  # fmt: skip
        if self.fusion == "shared":
            code = f"one shared code of {self.latent_dim}, read from both encoders at once"
        else:
            code = "the GEX part ({}) and the ATAC part ({}) side by side".format(
                *self.latent_split
            )
            if self.latent_scaling == "block":
                code += ", scaled to equal total variance"
        reads = "the whole code" if self.decoders == "joint" else "only its own part of the code"
        if self.batch_conditioning:
            reads += " and a one-hot of the cell's batch"
        lines = [
            f"- **sees** GEX as {sees['gex'][self.gex_input]}; ATAC as {sees['atac'][self.atac_input]}",
            f"- **embeds** each cell as {code}",
            f"- **decodes**: each decoder reads {reads}",
            f"- **losses**: GEX {self.loss_label('gex', long=True)}; "
            f"ATAC {self.loss_label('atac', long=True)}"
            + ("; both outputs pass a ReLU" if self.output_activation == "relu" else ""),
        ]
        if self.adversarial_batch > 0:
            lines.append(
                f"- **batch adversary**: a classifier reads the code through gradient reversal "
                f"(weight {self.adversarial_batch:g}), so the code learns to hide the batch"
            )
        if self.integration == "harmony":
            lines.append(
                "- **then integrates**: the code of all cells is corrected for their batch by "
                "Harmony, as the `harmony` baseline corrects `pca_concat`; that is the embedding"
            )
        if self.modality_dropout > 0:
            lines.append(
                f"- **modality dropout**: {self.modality_dropout:.0%} of each batch's cells "
                "lose one modality while training"
            )
        return "\n".join(lines)

    def svd_limit(self, gex_dim: int, atac_dim: int, n_cells: int | None = None) -> int | None:
        """The most ``n_components`` the ``"svd"`` inputs allow on data of this size.

        Fewer than the features of each modality with ``"svd"`` input (a PCA / LSI of all
        of them would be a rotation, not a reduction) and, when ``n_cells`` is known, at
        most ``n_cells - 2`` (the exact SVD, one LSI component dropped, needs more cells
        than components). ``None`` without ``"svd"`` inputs.
        """
        modes = ((self.gex_input, gex_dim), (self.atac_input, atac_dim))
        limits = [int(dim) - 1 for mode, dim in modes if mode == "svd"]
        if not limits:
            return None
        if n_cells is not None:
            limits.append(int(n_cells) - 2)
        return max(min(limits), 1)

    def fitted_to(self, gex_dim: int, atac_dim: int, n_cells: int | None = None) -> ModelConfig:
        """This configuration, adapted to data of ``gex_dim`` genes, ``atac_dim`` peaks and
        (if known) ``n_cells`` cells: an ``n_components`` above :meth:`svd_limit` becomes
        that limit, with a ``UserWarning`` saying what was asked, what is used and why.

        The model records the adapted value (``model.config``), so a saved model and its
        description state what was trained.
        """
        limit = self.svd_limit(gex_dim, atac_dim, n_cells)
        if limit is None or self.n_components <= limit:
            return self
        sizes = {"GEX": (self.gex_input, gex_dim), "ATAC": (self.atac_input, atac_dim)}
        dims = " and ".join(
            f"{dim:,} {name}" for name, (mode, dim) in sizes.items() if mode == "svd"
        )
        cells = "" if n_cells is None else f", and at most the {n_cells:,} cells less 2"
        warnings.warn(
            f"n_components={self.n_components} asked, but the 'svd' inputs allow at most "
            f"{limit} components here (fewer than the {dims} features{cells}); using "
            f"n_components={limit} for every 'svd' input. Ask for at most {limit} "
            "(N_COMPONENTS in notebook 03) to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
        return self.replace(n_components=limit)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The names of the options, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **options) -> ModelConfig:
        """A copy with ``options`` changed (validated); unknown names raise a ``TypeError``."""
        check_names("ModelConfig.replace()", options, self.option_names())
        return dataclasses.replace(self, **options)

    @classmethod
    def from_preset(cls, name: str | None = None, **options) -> ModelConfig:
        """The preset ``name`` of :data:`PRESETS` (``None``: :data:`DEFAULT_PRESET`) with
        ``options`` changed (see :meth:`replace`)."""
        name = DEFAULT_PRESET if name is None else name
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}; choose from {sorted(PRESETS)}.")
        return PRESETS[name].replace(**options)


def overrides(**options) -> dict:
    """``options`` without those that are ``None`` ("the preset's"), for
    :meth:`ModelConfig.from_preset` from parameters where ``None`` means "keep"."""
    return {name: value for name, value in options.items() if value is not None}


#: Named configurations (``build_model(preset=...)``). ``"original"`` is the seed
#: notebook's model as it was: each decoder reads only its own half of the code
#: (``decoders="own"``) and both outputs pass a ReLU (MSE on log-normalised genes, BCE on
#: binarised peaks read from the ReLU): the "before" of the report. ``"seed"`` is that
#: architecture with its defects fixed: joint decoders, a linear GEX output and ATAC
#: logits; the network sees the log-normalised genes and binarised peaks themselves. ``"jae"`` feeds it per-modality SVD
#: components instead (GEX PCA + ATAC LSI, 100 each, both under MSE, as the JAE model of
#: the NeurIPS 2021 competition), with batch normalisation and the two halves of the
#: embedding scaled to equal total variance (chosen on the earlier simulator:
#: ``benchmarks/ablation_linear_simulator.md``). ``"mmae"``
#: keeps the SVD inputs and batch normalisation of ``"jae"`` and makes it a bimodal
#: autoencoder: one shared code (``fusion="shared"``), decoders conditioned on the batch,
#: and the selected features themselves reconstructed under count likelihoods (negative
#: binomial on the GEX counts, Bernoulli on the binarised peaks); for the ablation that
#: chooses the default. ``"jae_batch"`` is ``"jae"`` with decoders conditioned on the
#: batch, the default before: the first ablation's choice, which tied the best other
#: method (Harmony on ``pca_concat``) on both development draws. ``"jae_harmony"``, the
#: default, is ``"jae_batch"`` with its code corrected for the batch by Harmony: the
#: second ablation's choice, ahead of Harmony on both development draws
#: (``benchmarks/ablation.md``).
PRESETS: dict[str, ModelConfig] = {"seed": ModelConfig()}
PRESETS["original"] = PRESETS["seed"].replace(decoders="own", output_activation="relu")
PRESETS["jae"] = PRESETS["seed"].replace(
    gex_input="svd", atac_input="svd", batch_norm=True, latent_scaling="block"
)
PRESETS["mmae"] = PRESETS["jae"].replace(
    latent_scaling="none",
    fusion="shared",
    batch_conditioning=True,
    gex_likelihood="nb",
    atac_likelihood="bernoulli",
)

PRESETS["jae_batch"] = PRESETS["jae"].replace(batch_conditioning=True)
PRESETS["jae_harmony"] = PRESETS["jae_batch"].replace(integration="harmony")

#: The preset :func:`~mmae_utils.model.build_model` starts from when none is named:
#: chosen on development draws only (``benchmarks/ablation.md``), before any evaluation
#: draw was scored.
DEFAULT_PRESET = "jae_harmony"

#: The configuration :func:`~mmae_utils.model.build_model` builds without options.
DEFAULT_CONFIG: ModelConfig = PRESETS[DEFAULT_PRESET]
