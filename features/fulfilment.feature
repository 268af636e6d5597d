Feature: An order is paid for, then handed over in the store, or undone
  As a customer of a dark store
  I want to pay once, get my goods from the picker, and get my money back whenever they cannot be mine
  So that I never pay for what I did not get, and the store never gives away what was not paid for

  Scenario: An order is paid and handed over
    Given "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 3 "oat milk" from "Riverside"
    Then the order is paid
    And "Riverside" shows 20 "oat milk" on hand, 3 reserved and 17 available
    When the picker hands the order over
    Then the order ends fulfilled
    And the payment provider kept the price of 3 "oat milk" for it
    And "Riverside" shows 17 "oat milk" on hand, 0 reserved and 17 available
    And no stock was created, lost or oversold

  Scenario: A declined payment releases the stock
    Given payments are declined
    And "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 3 "oat milk" from "Riverside"
    Then the order ends cancelled
    And the payment provider kept nothing for it
    And "Riverside" shows 20 "oat milk" on hand, 0 reserved and 20 available
    And handing the order over is refused

  Scenario: A customer cancels after paying and is refunded
    Given "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 3 "oat milk" from "Riverside"
    Then the order is paid
    When the customer cancels the order
    Then the order ends cancelled
    And the payment provider refunded the price of 3 "oat milk" for it
    And "Riverside" shows 20 "oat milk" on hand, 0 reserved and 20 available
    And handing the order over is refused

  Scenario: A hand-over that fails refunds and releases
    Given the store cannot pick orders
    And "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 3 "oat milk" from "Riverside"
    Then the order ends cancelled
    And the payment provider refunded the price of 3 "oat milk" for it
    And "Riverside" shows 20 "oat milk" on hand, 0 reserved and 20 available

  Scenario: An orchestrator killed mid-fulfilment finishes the order
    Given the delivery workers are stopped
    And "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    When a customer orders 3 "oat milk" from "Riverside"
    And the orchestrator is killed and started again with its workers
    Then the order is paid
    When the picker hands the order over
    Then the order ends fulfilled
    And the payment provider kept the price of 3 "oat milk" for it
    And no stock was created, lost or oversold
