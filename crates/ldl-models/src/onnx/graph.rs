//! Building an ONNX graph: constant tensors, operator nodes with their attributes, and the
//! graph's typed inputs and outputs, with unique names for the values between them.

use std::collections::BTreeSet;

use candle_core::{DType, Tensor};

use super::proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, NodeProto, TensorProto,
    TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
};
use crate::error::{Error, Result};

/// One dimension of a graph input or output: a size, or a name every input and output
/// shares (`batch`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Dim {
    Fixed(usize),
    Named(&'static str),
}

/// A graph under construction. Node and value names are unique: a name asked for twice
/// gets a numeric suffix the second time.
#[derive(Default)]
pub(crate) struct GraphBuilder {
    graph: GraphProto,
    names: BTreeSet<String>,
}

impl GraphBuilder {
    /// A unique value name starting with `wanted`.
    fn unique(&mut self, wanted: &str) -> String {
        let mut name = wanted.to_string();
        let mut suffix = 1;
        while !self.names.insert(name.clone()) {
            suffix += 1;
            name = format!("{wanted}_{suffix}");
        }
        name
    }

    /// Reserves `name` exactly (a graph input or output the caller has made unique).
    pub(crate) fn reserve(&mut self, name: &str) -> Result<()> {
        if self.names.insert(name.to_string()) {
            Ok(())
        } else {
            Err(Error::Export(format!(
                "two ONNX values would be named `{name}`"
            )))
        }
    }

    /// A float32 constant from a tensor of any float dtype (model variables).
    pub(crate) fn weight(&mut self, name: &str, tensor: &Tensor) -> Result<String> {
        let values = tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let dims = tensor.dims().to_vec();
        Ok(self.floats(name, &dims, &values))
    }

    /// A float32 constant of shape `dims`.
    pub(crate) fn floats(&mut self, name: &str, dims: &[usize], values: &[f32]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(name, dims, data_type::FLOAT, raw_data)
    }

    /// An int64 constant of shape `[values.len()]` (shapes and axes given to operators).
    pub(crate) fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        let raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(name, &[values.len()], data_type::INT64, raw_data)
    }

    fn constant(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: i32,
        raw_data: Vec<u8>,
    ) -> String {
        let name = self.unique(name);
        self.graph.initializer.push(TensorProto {
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type,
            name: name.clone(),
            raw_data,
        });
        name
    }

    /// Adds a node computing `op` of `inputs` into a new value named after `output`;
    /// returns that value's name.
    pub(crate) fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) -> String {
        let output = self.unique(output);
        self.node_into(op, inputs, &output, attributes);
        output
    }

    /// Adds a node writing into `output`, a name already reserved (a graph output).
    pub(crate) fn node_into(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<AttributeProto>,
    ) {
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: format!("{op}_{}", self.graph.node.len()),
            op_type: op.to_string(),
            attribute: attributes,
        });
    }

    /// Declares a float32 graph input.
    pub(crate) fn input(&mut self, name: &str, shape: &[Dim], doc: String) {
        self.graph.input.push(value_info(name, shape, doc));
    }

    /// Declares a float32 graph output.
    pub(crate) fn output(&mut self, name: &str, shape: &[Dim], doc: String) {
        self.graph.output.push(value_info(name, shape, doc));
    }

    /// The finished graph.
    pub(crate) fn finish(self, name: &str, doc_string: String) -> GraphProto {
        GraphProto {
            name: name.to_string(),
            doc_string,
            ..self.graph
        }
    }
}

fn value_info(name: &str, shape: &[Dim], doc_string: String) -> ValueInfoProto {
    let dim = shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(size) => Dimension {
                dim_value: Some(*size as i64),
                dim_param: None,
            },
            Dim::Named(param) => Dimension {
                dim_value: None,
                dim_param: Some(param.to_string()),
            },
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string,
    }
}

/// An integer attribute.
pub(crate) fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: attribute_type::INT,
        i: value,
        ..Default::default()
    }
}

/// A list-of-integers attribute.
pub(crate) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: attribute_type::INTS,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// A float attribute.
pub(crate) fn float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: attribute_type::FLOAT,
        f: value,
        ..Default::default()
    }
}
