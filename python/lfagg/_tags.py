"""scikit-learn's tags for lfagg's estimators: they take bags (a Bags or a list of 2-D
arrays), not one 2-D array, and what their ``transform`` returns keeps the features'
dtype, float32 or float64. Without transformer tags, scikit-learn's estimator checks
stopped at the classifiers that also transform (BagClassifier, the CV searches)."""


class BagsTags:
    """A mixin, placed before scikit-learn's base classes, that corrects their tags."""

    def __sklearn_tags__(self):  # called by scikit-learn >= 1.6 only, which has TransformerTags
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        if hasattr(self, "transform"):  # BagClassifier's is its encoder's: another library's may not keep float32
            foreign = not isinstance(getattr(self, "encoder", self), BagsTags)
            tags.transformer_tags = TransformerTags(preserves_dtype=["float64"] if foreign else ["float64", "float32"])
        return tags
