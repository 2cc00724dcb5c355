"""The experiment runner: the command line, options, run folders, grids and the evaluation driver, on top
of the library (models, nets, data, augmentation, metrics, callbacks), which never imports it."""
