//! A plain row-major f32 matrix: the storage type of deltas and factors.
//! Row-major matches safetensors' layout of `[out, in]` weights, so a tensor's
//! f32 values become a `Matrix` without reordering; heavy kernels borrow it as
//! a faer view without copying.

use faer::{Mat, MatRef, Par};

use super::OsdError;
use crate::format::tensors::OwnedTensor;

/// Dense row-major f32 matrix: element (i, j) is `data[i * cols + j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Entries, row-major.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix over `data`, which must hold exactly `rows * cols` values.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self, OsdError> {
        match rows.checked_mul(cols) {
            Some(len) if len == data.len() => Ok(Self { rows, cols, data }),
            _ => Err(OsdError::shape(
                "Matrix::new",
                format!("{rows}x{cols} from {} values", data.len()),
            )),
        }
    }

    /// A rows × cols matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// A matrix with entry (i, j) = f(i, j).
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                data.push(f(i, j));
            }
        }
        Self { rows, cols, data }
    }

    /// A 2-D float tensor (f32/f16/bf16, widened exactly) as a matrix; a
    /// PEFT `[out, in]` weight or LoRA factor keeps its orientation.
    pub fn from_tensor(t: &OwnedTensor) -> Result<Self, OsdError> {
        let [rows, cols] = t.shape[..] else {
            return Err(OsdError::shape(
                "Matrix::from_tensor",
                format!("{}: shape {:?} is not 2-D", t.name, t.shape),
            ));
        };
        let data = t.to_f32().ok_or_else(|| {
            OsdError::param(
                "tensor",
                format!("{}: {:?} is not a float dtype", t.name, t.dtype),
            )
        })?;
        Self::new(rows, cols, data)
    }

    /// Entry (i, j).
    #[inline]
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }

    /// Row i.
    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The transpose.
    pub fn transpose(&self) -> Matrix {
        Matrix::from_fn(self.cols, self.rows, |i, j| self.get(j, i))
    }

    /// `self · rhs` (faer's blocked f32 GEMM, rayon-parallel).
    pub fn matmul(&self, rhs: &Matrix) -> Result<Matrix, OsdError> {
        if self.cols != rhs.rows {
            return Err(OsdError::shape(
                "matmul",
                format!("{}x{} · {}x{}", self.rows, self.cols, rhs.rows, rhs.cols),
            ));
        }
        let mut out = Mat::<f32>::zeros(self.rows, rhs.cols);
        faer::linalg::matmul::matmul(
            out.as_mut(),
            faer::Accum::Replace,
            self.as_faer(),
            rhs.as_faer(),
            1.0f32,
            Par::rayon(0),
        );
        Ok(Matrix::from_faer(out.as_ref()))
    }

    /// `self − rhs`.
    pub fn sub(&self, rhs: &Matrix) -> Result<Matrix, OsdError> {
        if (self.rows, self.cols) != (rhs.rows, rhs.cols) {
            return Err(OsdError::shape(
                "sub",
                format!("{}x{} − {}x{}", self.rows, self.cols, rhs.rows, rhs.cols),
            ));
        }
        let data = self
            .data
            .iter()
            .zip(&rhs.data)
            .map(|(a, b)| a - b)
            .collect();
        Ok(Matrix { data, ..*self })
    }

    /// Frobenius norm, accumulated in f64.
    pub fn frobenius_norm(&self) -> f64 {
        self.data
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt()
    }

    /// True when no entry is NaN or infinite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|x| x.is_finite())
    }

    /// Zero-copy faer view (row-major = column stride 1).
    pub(crate) fn as_faer(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(&self.data, self.rows, self.cols)
    }

    /// Widened copy for f64 factorizations (accurate small singular values).
    pub(crate) fn to_faer64(&self) -> Mat<f64> {
        Mat::from_fn(self.rows, self.cols, |i, j| f64::from(self.get(i, j)))
    }

    pub(crate) fn from_faer(m: MatRef<'_, f32>) -> Matrix {
        Matrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
    }

    #[cfg(test)]
    pub(crate) fn from_faer64(m: MatRef<'_, f64>) -> Matrix {
        Matrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)] as f32)
    }
}

/// ‖reference − approx‖_F / ‖reference‖_F (0 when both are zero; infinite
/// when only the reference is zero).
pub fn relative_frobenius_error(reference: &Matrix, approx: &Matrix) -> Result<f64, OsdError> {
    let diff = reference.sub(approx)?.frobenius_norm();
    let norm = reference.frobenius_norm();
    Ok(if norm > 0.0 {
        diff / norm
    } else if diff == 0.0 {
        0.0
    } else {
        f64::INFINITY
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_transpose_and_shapes() {
        let a = Matrix::new(2, 3, vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let b = a.transpose();
        assert_eq!(b.data, vec![1., 4., 2., 5., 3., 6.]);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.data, vec![14., 32., 32., 77.]);
        assert!(a.matmul(&a).is_err());
        assert!(Matrix::new(2, 2, vec![0.0; 3]).is_err());
        assert_eq!(relative_frobenius_error(&a, &a).unwrap(), 0.0);
    }

    #[test]
    fn from_tensor_checks_shape_and_dtype() {
        let t = OwnedTensor {
            name: "w".into(),
            dtype: safetensors::Dtype::F32,
            shape: vec![2, 1],
            data: [1.5f32, -2.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        assert_eq!(Matrix::from_tensor(&t).unwrap().data, vec![1.5, -2.0]);
        let flat = OwnedTensor {
            shape: vec![2],
            ..t.clone()
        };
        assert!(Matrix::from_tensor(&flat).is_err());
        let ints = OwnedTensor {
            dtype: safetensors::Dtype::I32,
            ..t
        };
        assert!(Matrix::from_tensor(&ints).is_err());
    }
}
