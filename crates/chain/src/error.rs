//! [`ChainError`]: what can go wrong between a node and TON, by kind, so a
//! caller can tell a chain it cannot reach from an answer it cannot use.

/// An error from the chain bindings: building or reading cells, the TON
/// HTTP API, keys and wallets, transfers.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Building or parsing a cell, a bag of cells or a dictionary.
    #[error("{0}")]
    Cell(#[from] tycho_types::error::Error),
    /// A bag of cells (BOC) that does not decode.
    #[error("bad bag of cells: {0}")]
    Boc(#[from] tycho_types::boc::de::Error),
    /// The TON HTTP API could not be reached, or answered an error.
    #[error("{0}")]
    Api(String),
    /// An answer of the chain (a get-method result, a transaction, the
    /// proxy registry) that is not what the contract returns.
    #[error("{0}")]
    Unexpected(String),
    /// A key, a mnemonic or a wallet file that cannot be used.
    #[error("{0}")]
    Key(String),
    /// A transfer that did not go through as sent.
    #[error("{0}")]
    Transfer(String),
    /// The embedded chain (the devnet's emulator) refused or failed.
    #[error("{0}")]
    Embedded(String),
    /// TON endpoints that must agree (`ton_api_agree`) kept answering a
    /// read differently: nothing is believed.
    #[error("{0}")]
    Disagree(String),
}

/// Text a person wrote (in a config file or on the command line) that is
/// not what it must be: the message says what was expected; the caller
/// names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{0:?} is not an amount of TON like 1.5")]
    NotAnAmount(String),
    #[error("at most 9 decimals (1 nano-TON), got {0:?}")]
    TooPrecise(String),
    #[error("must be more than 0")]
    Zero,
    #[error("not a TON address ({reason}): {text:?}")]
    NotAnAddress { text: String, reason: String },
    #[error("Cocoon's contracts and wallets live on the basechain (0:...), got workchain {0}")]
    NotBasechain(i8),
    #[error("must be \"testnet\", \"mainnet\" or an http(s) URL of a TON HTTP API, got {0:?}")]
    ApiUrl(String),
    #[error("the environment variable {0} is not set")]
    MissingEnv(String),
    #[error("{0}")]
    Client(String),
}

/// `return Err(ChainError::KIND(format!(...)))`.
macro_rules! fail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::ChainError::$kind(format!($($arg)*)))
    };
}

/// [`fail!`] unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($arg:tt)*) => {
        if !$cond {
            $crate::error::fail!($kind, $($arg)*);
        }
    };
}

pub(crate) use {ensure, fail};

#[cfg(test)]
mod tests {
    use super::ChainError;
    use crate::{Chain, ClientState, TonHttp};

    #[test]
    fn a_malformed_get_method_result_is_unexpected_and_names_the_entry() {
        let err = ClientState::from_stack(&[]).unwrap_err();
        assert!(matches!(err, ChainError::Unexpected(_)), "{err:?}");
        assert!(err.to_string().contains("result 4"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_api_is_an_api_error() {
        let ton = TonHttp::new("http://127.0.0.1:9/api/v2", None).unwrap();
        let address = crate::StdAddr::new(0, Default::default());
        let err = ton.account(&address).await.unwrap_err();
        assert!(matches!(err, ChainError::Api(_)), "{err:?}");
    }
}
