//! Every job kind, as stored in the queue's `kind` column. The text of the first four is what
//! earlier versions stored, so rows queued before an upgrade still run.

use crate::store::text_enum;

text_enum!(
    /// The kind of a queued job; each is one `Job` type.
    JobKind, "job kind" {
        /// A Shopify webhook delivery (`shopify::jobs::ShopifyWebhook`).
        ShopifyWebhook => "shopify",
        /// A raw Meta webhook delivery, fanned out per conversation and page.
        FacebookWebhook => "facebook",
        /// One Messenger item merged into its conversation.
        FacebookMessage => "facebook_message",
        /// A page metadata refresh after `changes`.
        FacebookPageRefresh => "facebook_page",
        /// A full catalogue sync of a shop (after connect, scheduled, from the CLI).
        ShopifySync => "shopify_sync",
        /// Re-creates missing Shopify webhook subscriptions.
        ShopifySubscriptions => "shopify_subscriptions",
        /// A poll of a page: metadata, then the conversations that changed.
        FacebookPagePoll => "facebook_page_poll",
        /// One conversation read back to its watermark and merged.
        FacebookConversationPoll => "facebook_conversation_poll",
        /// Verifies the connect self-test message and removes its conversation.
        FacebookSelfTest => "facebook_self_test",
        /// Re-subscribes the app to a page whose subscription is missing.
        FacebookSubscriptions => "facebook_subscriptions",
        /// Meta's data deletion request for one Facebook user.
        FacebookDataDeletion => "facebook_data_deletion",
        /// Deletes the old merchant's copy of a page moved to another merchant.
        FacebookPageMoved => "facebook_page_moved",
        /// A page its merchant disconnected: the same deletion, for that page.
        FacebookPageDisconnect => "facebook_page_disconnect",
        /// Test-only kinds (feature `testkit`; registered nowhere else).
        Testkit => "testkit",
        TestkitEffect => "testkit_effect",
    }
);
