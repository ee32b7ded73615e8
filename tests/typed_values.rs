//! Typed ops with the payloads numeric programs pass around: ndarray arrays and long
//! vectors travel as raw buffers beside the message, not as one value per element.

use ndarray::{Array1, Array2, Axis};
use rask::typed::{from_value, to_value};
use rask::Value;

/// Column sums of a matrix.
#[rask::op]
fn column_sums(a: Array2<f32>) -> Array1<f32> {
    a.sum_axis(Axis(0))
}

/// The raw buffers inside a value, by length.
fn raw_lengths(v: &Value, out: &mut Vec<usize>) {
    match v {
        Value::Bytes(b) => out.push(b.len()),
        Value::List(items) => items.iter().for_each(|i| raw_lengths(i, out)),
        _ => {}
    }
}

#[test]
fn an_ndarray_travels_as_one_raw_buffer_and_comes_back_equal() {
    let a = Array2::from_shape_fn((64, 32), |(i, j)| (i * 32 + j) as f32 * 0.5);
    let v = to_value(&a).unwrap();
    let mut raw = Vec::new();
    raw_lengths(&v, &mut raw);
    // Its 2,048 elements are one buffer of 8 KiB, not 2,048 values.
    assert_eq!(raw, vec![64 * 32 * 4]);
    let back: Array2<f32> = from_value(&v).unwrap();
    assert_eq!(back, a);
}

#[test]
fn an_op_taking_and_returning_arrays_runs_on_the_cluster() {
    let client = rask::Client::new().unwrap();
    let a = Array2::from_shape_fn((300, 4), |(i, j)| (i + j) as f32);
    let sums = client
        .submit(column_sums, (a.clone(),))
        .unwrap()
        .result()
        .unwrap();
    assert_eq!(sums, a.sum_axis(Axis(0)));
    assert_eq!(sums.to_vec(), vec![44850.0, 45150.0, 45450.0, 45750.0]);
}
