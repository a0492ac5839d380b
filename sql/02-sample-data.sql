INSERT INTO product (id, name, category, price) VALUES
  (1, 'Espresso machine', 'kitchen', 349.00),
  (2, 'Grinder', 'kitchen', 129.50),
  (3, 'Café au lait bowl', 'tableware', 12.90),
  (4, 'Gift card', NULL, 50.00),
  (5, 'Descaler', 'kitchen', 9.99);
