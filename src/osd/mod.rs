//! Optimal Singular Damage (Alipour & Amiri, arXiv 2511.02681): compression of
//! weight deltas as sparsified truncated SVD factors. Lands with issue 4/7.
