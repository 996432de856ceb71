//! One-line error messages for the command-line tools: an error and its causes joined by `: `,
//! leaving out a cause whose text the message already ends with (many errors print their
//! source inline, and chaining it again would say everything twice).

use std::error::Error;

/// `error: cause: deeper cause`, each distinct text once.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = e.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {0}: {1}")]
    struct Inline(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("export")]
    struct Outer(#[source] Inline);

    #[test]
    fn causes_printed_inline_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Outer(Inline("a.onnx", io));
        assert_eq!(error_chain(&e), "export: cannot read a.onnx: no such file");
    }
}
