"""Domain adaptation: ``deep/`` loss modules run by one trainer, ``shallow/`` scikit-learn
estimators on features, and :class:`FeatureAdapter`, which adapts a bottleneck and head on
top of a frozen, cached backbone."""
