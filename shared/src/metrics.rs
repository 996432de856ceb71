//! Concordance correlation coefficient (CCC) and mean squared error (MSE), batch and streaming.
